"""Where a predict stream's time goes. Each actor stamps the batches it scores (which actor,
how long its model took to load and when it was ready, when the batch was done, the
seconds spent reading the batch's inputs and in the model); the driver reads the stamps
off each batch before writing it and turns them into the run's `time.*` metrics and two
rates: end to end (what a user waits, the actors' start and model loads included) and
steady state (the rows scored once every actor had scored its first batch, over the time
since then)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

ACTOR = "_timing_actor"
LOADED_S = "_timing_loaded_s"
READY_AT = "_timing_ready_at"
DONE_AT = "_timing_done_at"
READ_S = "_timing_read_s"
SCORE_S = "_timing_score_s"


@dataclass(frozen=True)
class ActorClock:
    """An actor's start: when its model was loaded and how long that took."""

    actor: str  # Ray's id of the actor
    loaded_s: float
    ready_at: float

    @classmethod
    def since(cls, began: float) -> ActorClock:
        """The clock of the actor this runs in, whose start began at `began`."""
        import ray

        now = time.time()
        return cls(ray.get_runtime_context().get_actor_id() or "", now - began, now)

    def stamp(self, frame: Any, read_s: float, score_s: float) -> Any:
        """`frame` (pandas) with this batch's stamps, one value in every row."""
        frame[ACTOR] = self.actor
        frame[LOADED_S] = self.loaded_s
        frame[READY_AT] = self.ready_at
        frame[READ_S] = read_s
        frame[SCORE_S] = score_s
        frame[DONE_AT] = time.time()
        return frame


@dataclass
class _Batch:
    actor: str
    done_at: float
    rows: int


@dataclass
class StreamTiming:
    """The stamps of every batch the driver received, from the stream's start."""

    started: float
    batches: list[_Batch] = field(default_factory=list)
    ready_at: dict[str, float] = field(default_factory=dict)
    loaded_s: dict[str, float] = field(default_factory=dict)
    read_s: float = 0.0
    score_s: float = 0.0
    write_s: float = 0.0

    def add(self, batch: Any) -> None:
        """The stamps of an Arrow table of scored rows: Ray Data joins several of an
        actor's batches into one block, so each run of rows of one stamp is one batch."""
        import numpy as np
        import pyarrow as pa

        if batch.num_rows == 0 or DONE_AT not in batch.column_names:
            return
        done = batch.column(DONE_AT).to_numpy()
        starts = np.flatnonzero(np.r_[True, done[1:] != done[:-1]])
        rows = np.diff(np.r_[starts, len(done)])
        firsts = batch.take(pa.array(starts))
        for i, actor in enumerate(str(a) for a in firsts.column(ACTOR).to_pylist()):
            self.ready_at[actor] = firsts.column(READY_AT)[i].as_py()
            self.loaded_s[actor] = firsts.column(LOADED_S)[i].as_py()
            self.read_s += firsts.column(READ_S)[i].as_py()
            self.score_s += firsts.column(SCORE_S)[i].as_py()
            self.batches.append(_Batch(actor, float(done[starts[i]]), int(rows[i])))

    def steady_rows_per_s(self) -> float | None:
        """Rows scored after every actor had scored its first batch, per second since
        then; None when no batch came after that."""
        first: dict[str, float] = {}
        for b in self.batches:
            first[b.actor] = min(first.get(b.actor, b.done_at), b.done_at)
        if not first:
            return None
        since = max(first.values())
        later = [b for b in self.batches if b.done_at > since]
        if not later:
            return None
        seconds = max(b.done_at for b in later) - since
        return sum(b.rows for b in later) / seconds if seconds > 0 else None

    def metrics(self) -> dict[str, float]:
        """The stream's `time.*` metrics (seconds) and its steady rows/s, when known."""
        found: dict[str, float] = {"time.write_s": self.write_s}
        if self.batches:
            found |= {
                "time.first_batch_s": min(b.done_at for b in self.batches) - self.started,
                "time.actors_ready_s": max(self.ready_at.values()) - self.started,
                "time.model_load_s": max(self.loaded_s.values()),
                "time.read_s": self.read_s,
                "time.score_s": self.score_s,
            }
        steady = self.steady_rows_per_s()
        if steady is not None:
            found["rows_per_s_steady"] = steady
        return found
