"""The README's spec reference is the one the pydantic models generate."""

from deeprig.spec.reference import render

from tests.conftest import REPO


def test_readme_spec_reference_is_current():
    readme = (REPO / "README.md").read_text()
    assert render() in readme, "regenerate with: python -m deeprig.spec.reference"
