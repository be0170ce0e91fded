"""lbsync.toml: defaults, relative paths, errors that name the setting, LBSYNC_* overrides."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pytest

from lbsync.config import (
    TEMPLATES_DIR,
    Config,
    ConfigError,
    ReloadMethod,
    TargetKind,
    load,
    parse_duration,
)
from lbsync.model.values import HealthMode

MINIMAL = """
[source.file]
path = "services.toml"

[[target]]
dest = "run/haproxy.cfg"
"""

EDGE = """
[source.file]
path = "services.toml"

[[target]]
name = "edge-1"
kind = "nginx"
dest = "run/nginx.conf"
"""


def load_text(tmp_path: Path, text: str, environ: Mapping[str, str] | None = None) -> Config:
    path = tmp_path / "lbsync.toml"
    path.write_text(text)
    return load(path, {} if environ is None else environ)


def test_a_minimal_file_gets_haproxy_defaults(tmp_path: Path) -> None:
    loaded = load_text(tmp_path, MINIMAL)
    (target,) = loaded.targets
    assert (target.name, target.kind) == ("haproxy", TargetKind.HAPROXY)
    assert target.template == TEMPLATES_DIR / "haproxy.cfg.j2"
    assert target.template.is_file()
    assert target.dest == tmp_path / "run" / "haproxy.cfg"
    assert target.validate == ("haproxy", "-c", "-f", "{staged}")
    assert (target.mode, target.backup) == (0o644, True)
    assert target.reload.method is ReloadMethod.NONE
    assert target.reload.server_state_file == tmp_path / "run" / "haproxy.state"
    assert target.vars["run_dir"] == str(tmp_path / "run")
    assert (target.vars["bind"], target.vars["fd_hard_limit"]) == (["*:80"], 1048576)
    assert "maxconn" not in target.vars  # HAProxy derives it from the limit it finds
    assert loaded.file_source is not None
    assert loaded.file_source.path == tmp_path / "services.toml"
    assert (loaded.min_wait, loaded.max_wait) == (0.2, 2.0)
    assert (loaded.health_mode, loaded.api.listen) == (HealthMode.PASSING, "127.0.0.1:9180")


def test_an_nginx_target_gets_its_own_template_validator_and_vars(tmp_path: Path) -> None:
    (target,) = load_text(tmp_path, EDGE).targets
    assert target.template == TEMPLATES_DIR / "nginx.conf.j2"
    assert target.template.is_file()
    assert target.validate == ("nginx", "-t", "-q", "-c", "{staged}")
    assert target.vars["worker_connections"] == 1024
    assert "fd_hard_limit" not in target.vars
    assert target.reload.signal == "HUP"
    assert target.reload.server_state_file is None


def test_relative_paths_are_resolved_against_the_config_files_directory(tmp_path: Path) -> None:
    conf = tmp_path / "conf"
    conf.mkdir()
    loaded = load_text(
        conf,
        """
        [source.file]
        path = "../data/services.toml"
        [[target]]
        template = "templates/custom.j2"
        dest = "/srv/haproxy.cfg"
        reload = { method = "master-cli", socket = "run/master.sock" }
        [target.vars]
        bind = "127.0.0.1:81"
        """,
    )
    assert loaded.file_source is not None
    assert loaded.file_source.path == conf / "../data/services.toml"
    (target,) = loaded.targets
    assert target.template == conf / "templates" / "custom.j2"
    assert target.dest == Path("/srv/haproxy.cfg")
    assert target.reload.socket == conf / "run" / "master.sock"
    assert target.vars["run_dir"] == "/srv"
    assert target.vars["bind"] == ["127.0.0.1:81"]


def test_a_target_var_overrides_its_default(tmp_path: Path) -> None:
    (target,) = load_text(
        tmp_path, MINIMAL + "[target.vars]\nmaxconn = 100\nrun_dir = '/r'\n"
    ).targets
    assert (target.vars["maxconn"], target.vars["run_dir"]) == (100, "/r")


def test_durations_are_read_with_units(tmp_path: Path) -> None:
    loaded = load_text(tmp_path, MINIMAL + '[apply]\nmin_wait = "250ms"\nmax_wait = "1.5m"\n')
    assert (loaded.min_wait, loaded.max_wait) == (0.25, 90.0)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("250ms", 0.25), ("2s", 2.0), ("1.5m", 90.0), ("1h", 3600.0), ("0.5", 0.5), (3, 3.0)],
    ids=repr,
)
def test_parse_duration_reads_numbers_and_units(value: object, seconds: float) -> None:
    assert parse_duration(value, "apply.min_wait") == seconds


@pytest.mark.parametrize("value", ["fast", "-1s", "2 weeks", True, -1, None], ids=repr)
def test_parse_duration_refuses_naming_the_setting(value: object) -> None:
    with pytest.raises(ConfigError, match=r"^apply\.min_wait: must"):
        parse_duration(value, "apply.min_wait")


BAD_FILES: dict[str, tuple[str, str]] = {
    "unknown in target": (MINIMAL + "colour = 1\n", "target[0].colour: unknown setting"),
    "unknown at top level": ("colour = 1\n" + MINIMAL, "colour: unknown setting"),
    "unknown in apply": (MINIMAL + "[apply]\nmin = 1\n", "apply.min: unknown setting"),
    "unknown in source": (MINIMAL.replace("path =", "where ="), "source.file.where: unknown"),
    "unknown kind": (MINIMAL + 'kind = "envoy"\n', "target[0].kind: must be one of"),
    "master-cli without socket": (
        MINIMAL + 'reload = { method = "master-cli" }\n',
        "target[0].reload.socket: required by method master-cli",
    ),
    "master-cli for nginx": (
        EDGE + 'reload = { method = "master-cli", socket = "m.sock" }\n',
        "target[0].reload.method: master-cli works only for haproxy",
    ),
    "signal without pidfile": (
        MINIMAL + 'reload = { method = "signal" }\n',
        "reload.pidfile: required",
    ),
    "unknown reload": (MINIMAL + 'reload = { method = "kill" }\n', "reload.method: must be one of"),
    "bad duration": (
        MINIMAL + '[apply]\nmin_wait = "soon"\n',
        "apply.min_wait: must be a duration",
    ),
    "max_wait < min_wait": (
        MINIMAL + '[apply]\nmin_wait = "2s"\nmax_wait = "1s"\n',
        "apply.max_wait: must not be shorter than apply.min_wait",
    ),
    "duplicate names": (MINIMAL + '[[target]]\ndest = "b.cfg"\nname = "haproxy"\n', "same name"),
    "duplicate dests": (MINIMAL + '[[target]]\ndest = "run/haproxy.cfg"\n', "same dest"),
    "unknown section": (MINIMAL.replace("[source.file]\npath", "[other]\npath"), "other: unknown"),
    "no source": ('[[target]]\ndest = "a.cfg"\n', "source: at least one source"),
    "no target": ('[source.file]\npath = "s.toml"\n', "target: at least one"),
    "no dest": (MINIMAL.replace('dest = "run/haproxy.cfg"', ""), "target[0].dest: must be"),
    "bad target name": (MINIMAL + 'name = "a b"\n', "target[0].name:"),
    "mode as number": (MINIMAL + "mode = 644\n", "target[0].mode: must be an octal string"),
    "validate as string": (
        MINIMAL + 'validate = "haproxy -c"\n',
        "target[0].validate: must be a list",
    ),
    "generic without template": (MINIMAL + 'kind = "generic"\n', "target[0].template: required"),
    "unknown health": ('health = "sometimes"\n' + MINIMAL, "health: must be one of"),
}


@pytest.mark.parametrize(("text", "named"), BAD_FILES.values(), ids=BAD_FILES.keys())
def test_every_error_names_the_file_and_the_setting(tmp_path: Path, text: str, named: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_text(tmp_path, text)
    assert str(caught.value).startswith(f"{tmp_path / 'lbsync.toml'}: ")
    assert named in str(caught.value)


def two_targets(first: str, second: str) -> str:
    return (
        '[source.file]\npath = "services.toml"\n\n'
        f'[[target]]\nname = "first"\n{first}\n\n[[target]]\nname = "second"\n{second}\n'
    )


@pytest.mark.parametrize(
    ("first", "second", "shared"),
    [
        ('dest = "run/a.cfg"', 'dest = "run/b.cfg"', "run/haproxy.sock and haproxy.state"),
        (
            'dest = "a/haproxy.cfg"\nvars = { run_dir = "/run/haproxy" }',
            'dest = "b/haproxy.cfg"\nvars = { run_dir = "/run/haproxy/" }',
            "/run/haproxy/haproxy.sock and haproxy.state",
        ),
        (
            'kind = "nginx"\ndest = "run/a.conf"',
            'kind = "nginx"\ndest = "run/b.conf"',
            "run/nginx.pid and its temporary directories",
        ),
    ],
    ids=["dests in one directory", "one run_dir written twice", "nginx"],
)
def test_two_targets_of_a_kind_sharing_a_run_dir_are_refused_naming_the_second(
    tmp_path: Path, first: str, second: str, shared: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_text(tmp_path, two_targets(first, second))
    assert "target[1].vars.run_dir: target 'second' would share " in str(caught.value)
    assert f"{shared} with target 'first'; give each its own vars.run_dir" in str(caught.value)


def test_targets_in_one_directory_with_their_own_run_dirs_are_accepted(tmp_path: Path) -> None:
    config = load_text(
        tmp_path,
        two_targets(
            'dest = "run/a.cfg"\nvars = { run_dir = "run/a" }',
            'dest = "run/b.cfg"\nvars = { run_dir = "run/b" }',
        ),
    )
    assert [str(each.run_dir) for each in config.targets] == ["run/a", "run/b"]
    mixed = load_text(tmp_path, two_targets('dest = "run/a.cfg"', 'kind = "nginx"\ndest = "run/b"'))
    assert mixed.targets[0].run_dir == mixed.targets[1].run_dir  # different files: no clash
    reloads = [each.reload.server_state_file for each in config.targets]
    assert reloads == [Path("run/a/haproxy.state"), Path("run/b/haproxy.state")]


def test_a_file_that_is_not_toml_is_a_config_error_with_the_file_name(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"lbsync\.toml: not valid TOML: .*line 2"):
        load_text(tmp_path, "[apply]\nmin_wait = \n")


def test_a_missing_file_is_a_config_error_with_the_file_name(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"absent\.toml: cannot read"):
        load(tmp_path / "absent.toml", {})


def test_an_unknown_kind_of_a_named_target_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"target\[0\]\.kind: must be one of"):
        load_text(tmp_path, EDGE.replace('"nginx"', '"envoy"'))


def test_environment_overrides_apply_and_source_settings(tmp_path: Path) -> None:
    environ = {
        "LBSYNC_APPLY_MIN_WAIT": "0.5",
        "LBSYNC_APPLY_MAX_WAIT": "5s",
        "LBSYNC_SOURCE_FILE_PATH": "/srv/services.toml",
        "LBSYNC_HEALTH": "warning",
        "LBSYNC_API_LISTEN": "127.0.0.1:9999",
        "LBSYNC_CONFIG": "/elsewhere.toml",
        "LBSYNC_NO_SUCH_SETTING": "1",
        "OTHER_APPLY_MIN_WAIT": "9",
    }
    loaded = load_text(tmp_path, MINIMAL, environ)
    assert (loaded.min_wait, loaded.max_wait) == (0.5, 5.0)
    assert loaded.file_source is not None
    assert loaded.file_source.path == Path("/srv/services.toml")
    assert (loaded.health_mode, loaded.api.listen) == (HealthMode.WARNING, "127.0.0.1:9999")


def test_environment_overrides_a_named_targets_dest_and_vars(tmp_path: Path) -> None:
    environ = {
        "LBSYNC_TARGET_EDGE_1_DEST": "/srv/edge/nginx.conf",
        "LBSYNC_TARGET_EDGE_1_VARS_BIND": '["127.0.0.1:81"]',
        "LBSYNC_TARGET_EDGE_1_VARS_WORKER_CONNECTIONS": "64",
    }
    (target,) = load_text(tmp_path, EDGE, environ).targets
    assert target.dest == Path("/srv/edge/nginx.conf")
    assert target.vars["run_dir"] == "/srv/edge"
    assert target.vars["bind"] == ["127.0.0.1:81"]
    assert target.vars["worker_connections"] == 64


def test_an_environment_value_is_checked_like_the_file_and_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"apply\.min_wait: must be a duration"):
        load_text(tmp_path, MINIMAL, {"LBSYNC_APPLY_MIN_WAIT": "soon"})


def test_the_given_environment_is_used_and_nothing_else(tmp_path: Path) -> None:
    loaded = load_text(tmp_path, MINIMAL + "[apply]\nmin_wait = 1\nmax_wait = 3\n", {})
    assert (loaded.min_wait, loaded.max_wait) == (1.0, 3.0)


def test_an_unnamed_target_is_overridden_by_its_default_name(tmp_path: Path) -> None:
    (target,) = load_text(tmp_path, MINIMAL, {"LBSYNC_TARGET_HAPROXY_DEST": "/srv/h.cfg"}).targets
    assert target.name == "haproxy"
    assert target.dest == Path("/srv/h.cfg")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("source = 5\n", "source: must be a table"),
        ("source = []\n", "source: must be a table"),
        ("[source]\nconsul = 1\n", "source.consul: must be a table"),
    ],
    ids=["a number", "a list", "a source that is not a table"],
)
def test_sources_that_are_not_tables_are_named_not_a_traceback(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "lbsync.toml"
    path.write_text(text + '\n[[target]]\ndest = "run/haproxy.cfg"\n')
    with pytest.raises(ConfigError) as caught:
        load(path, environ={"CONSUL_HTTP_TOKEN": "from-consul-env"})
    assert message in str(caught.value)
