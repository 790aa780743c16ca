"""The README's spec reference is the one the pydantic models generate."""

from deeprig.spec.reference import render

from tests.conftest import REPO


def test_readme_spec_reference_is_current():
    readme = (REPO / "README.md").read_text()
    assert render() in readme, "regenerate with: python -m deeprig.spec.reference"


def test_the_reference_has_a_section_for_every_model_family_and_data_source():
    from deeprig.spec.data import DATA_CONFIGS
    from deeprig.spec.model import MODEL_CONFIGS
    from deeprig.spec.reference import sections

    documented = [model for _, model in sections()]
    assert set(DATA_CONFIGS) | set(MODEL_CONFIGS) <= set(documented)
    assert len(documented) == len(set(documented))  # each model once
