"""What the train runner's pre-flight learned (`TrainChecked`), and a train job told in a few
words: the model or loop it trains, the data it reads. Shared by the train runner and a
search over a train base."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from deeprig.cluster.resources import WorkerBudget
from deeprig.data.info import DataInfo
from deeprig.runners.fsdp_checks import fsdp_note
from deeprig.spec.train import TrainSpec

if TYPE_CHECKING:
    from deeprig.usercode import CodeBundle


@dataclass(frozen=True)
class TrainChecked:
    """What the pre-flight learned: enough to set the job up without touching Ray."""

    spec: TrainSpec
    data: DataInfo | None  # None: the user's loop loads its own data (no `data:`)
    budget: WorkerBudget
    in_memory: bool
    code: CodeBundle | None = None  # the user's modules, when code.paths names any
    memory: str = ""  # a worker's memory estimate under ddp and fsdp, two lines

    @property
    def summary(self) -> str:
        memory = f"\n  {self.memory}" if self.memory else ""
        return (
            f"{what_trains(self.spec)} on {what_it_reads(self.spec, self.data)}, "
            f"{self.spec.scaling.described()} worker(s) x {self.budget.cpus_per_worker:g} CPU"
            f"{fsdp_note(self.spec)}{memory}"
        )


def what_trains(spec: TrainSpec) -> str:
    """The model (or the user's loop) a train spec trains, in a few words."""
    if spec.loop is not None:
        return f"loop {spec.loop.function}"
    assert spec.model is not None
    return getattr(spec.model, "target", None) or spec.model.name


def what_it_reads(spec: TrainSpec, data: DataInfo | None, splits: bool = False) -> str:
    """The data a train job reads, in a few words (the user's loop may load its own):
    its task and size, or (`splits`) the rows of its two splits."""
    if spec.data is None or data is None:
        return "its own data"
    if splits:
        return f"{spec.data.source}: {data.num_train} train / {data.num_val} val rows"
    return (
        f"{spec.data.source} ({data.task}, {data.num_train} train rows, {data.num_outputs} outputs)"
    )
