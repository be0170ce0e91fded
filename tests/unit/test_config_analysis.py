"""`[analysis]`: the Prometheus of rollouts' metric gates, its timeout and rate window; errors
that name the setting and never show credentials; `LBSYNC_ANALYSIS_*` overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from lbsync.config import AnalysisConfig, ConfigError, load

MINIMAL = '[source.file]\npath = "services.toml"\n\n[[target]]\ndest = "run/haproxy.cfg"\n\n'


def load_analysis(
    tmp_path: Path, table: str, environ: dict[str, str] | None = None
) -> AnalysisConfig:
    path = tmp_path / "lbsync.toml"
    path.write_text(MINIMAL + table)
    return load(path, environ or {}).analysis


def test_without_the_table_there_is_no_prometheus(tmp_path: Path) -> None:
    assert load_analysis(tmp_path, "") == AnalysisConfig(prometheus=None, timeout=5.0, window=60.0)


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ("http://127.0.0.1:9090", "http://127.0.0.1:9090"),
        ("http://127.0.0.1:9090/", "http://127.0.0.1:9090"),
        ("https://metrics.example.com/prometheus/", "https://metrics.example.com/prometheus"),
        ("http://[::1]:9090", "http://[::1]:9090"),
        ("HTTP://Prom.Example.com", "http://prom.example.com"),
    ],
)
def test_the_url_is_kept_normalised(tmp_path: Path, given: str, kept: str) -> None:
    table = f'[analysis]\nprometheus = "{given}"\ntimeout = "2s"\nwindow = "30s"\n'
    assert load_analysis(tmp_path, table) == AnalysisConfig(kept, timeout=2.0, window=30.0)


@pytest.mark.parametrize(
    ("table", "says"),
    [
        ('prometheus = "localhost:9090"', "analysis.prometheus: expected http(s)://host"),
        ('prometheus = "ftp://h"', "analysis.prometheus: expected http(s)://host"),
        ('prometheus = "http://h:99999"', "analysis.prometheus: expected"),
        ('prometheus = "http://h/api?x=1"', "no query, fragment or space"),
        ('prometheus = ""', "analysis.prometheus: must be a non-empty string"),
        ("prometheus = 9090", "analysis.prometheus: must be a non-empty string"),
        ('timeout = "0s"', "analysis.timeout: must be longer than 0"),
        ('timeout = "soon"', "analysis.timeout: must be a duration"),
        ('window = "500ms"', "analysis.window: at least 1s"),
        ('url = "http://h"', "analysis.url: unknown setting"),
    ],
)
def test_a_bad_setting_is_named(tmp_path: Path, table: str, says: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_analysis(tmp_path, f"[analysis]\n{table}\n")
    assert str(caught.value).startswith(f"{tmp_path / 'lbsync.toml'}: ")
    assert says in str(caught.value)


def test_credentials_in_the_url_are_refused_and_never_shown(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_analysis(tmp_path, '[analysis]\nprometheus = "http://admin:hunter2@prom:9090"\n')
    assert "analysis.prometheus: 'http://prom:9090' (credentials removed)" in str(caught.value)
    assert "hunter2" not in str(caught.value)


def test_environment_variables_set_every_setting(tmp_path: Path) -> None:
    environ = {
        "LBSYNC_ANALYSIS_PROMETHEUS": "http://127.0.0.1:9091",
        "LBSYNC_ANALYSIS_TIMEOUT": "1.5",
        "LBSYNC_ANALYSIS_WINDOW": "2m",
    }
    assert load_analysis(tmp_path, "", environ) == AnalysisConfig(
        "http://127.0.0.1:9091", timeout=1.5, window=120.0
    )
