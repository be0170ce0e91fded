"""The shipped templates render fixed inputs to the golden files byte for byte."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.golden import cases, render_case

REFRESH = "if the change is intended: .venv/bin/python scripts/refresh-golden.py"


@pytest.mark.parametrize("case", cases(), ids=lambda case: case.name)
def test_a_fixed_input_renders_its_golden_files_byte_for_byte(case: Path) -> None:
    rendered = render_case(case)
    assert sorted(rendered) == ["haproxy.cfg", "nginx.conf"]
    for name, text in rendered.items():
        golden = case / name
        assert golden.exists(), f"{golden} is missing; {REFRESH}"
        assert text == golden.read_text(), f"{golden} differs from the rendered text; {REFRESH}"


def test_there_are_golden_cases_to_compare() -> None:
    assert len(cases()) >= 3
