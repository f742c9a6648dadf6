"""Deploy files: PM2's config, the systemd template unit and .env.example stay valid and consistent."""

from __future__ import annotations

import configparser
import json
import re
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from workerpool import config

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "deploy" / "workerpool@.service"
SHUTDOWN_TIMEOUT_MS = config.Settings().shutdown_timeout


def _pm2_apps() -> list[dict]:
    data = json.loads((ROOT / "pm2.config.json").read_text())
    assert isinstance(data.get("apps"), list) and data["apps"], "pm2.config.json needs an apps list"
    return data["apps"]


def test_pm2_apps_run_the_supervisor_in_fork_mode_and_outwait_a_graceful_stop():
    apps = _pm2_apps()
    assert len(apps) == 2
    names = [a["name"] for a in apps]
    assert len(set(names)) == 2, names
    for app in apps:
        command = shlex.split(f"{app['script']} {app.get('args', '')}")
        # A path, not a bare name: PM2 resolves `workerpool` against its cwd first, where the repository
        # root's package directory of that name wins over PATH (tests/acceptance/test_pm2.py runs it for real).
        assert command[:2] == [".venv/bin/workerpool", "run"], command
        assert app["exec_mode"] == "fork"  # cluster mode is for Node.js servers, not a Python supervisor
        assert app["interpreter"] == "none"  # `workerpool` is an executable, not a JS file
        env = app["env"]
        shutdown = int(env.get("SHUTDOWN_TIMEOUT", SHUTDOWN_TIMEOUT_MS))
        assert app["kill_timeout"] > shutdown, "PM2 would SIGKILL before the graceful stop may end"
        assert app["kill_timeout"] >= shutdown + 5000
        assert app["exp_backoff_restart_delay"] > 0
        assert 0 < app["max_restarts"] <= 100
        assert app["autorestart"] is True
        # The env block only names real settings (plus PM2's instance counter), with valid values.
        known = set(config.VARIABLES) | {app.get("increment_var")}
        assert set(env) <= known, set(env) - known
        settings = config.load(environ={k: v for k, v in env.items() if k in config.VARIABLES}, env_file=None)
        assert settings.shutdown_timeout == shutdown

    single, scaled = apps
    # One supervisor with N workers ...
    assert single["instances"] == 1
    workers = int(re.search(r"--workers (\d+)", single["args"]).group(1))
    assert workers > 1 and single["env"]["WORKERS"] == str(workers)
    # ... or N single-worker supervisors (`pm2 scale workerpool-scaled N`), each its own fork.
    assert scaled["instances"] > 1
    assert "--workers 1" in scaled["args"] and scaled["env"]["WORKERS"] == "1"
    # Scaled instances cannot share one health port on one host.
    assert scaled["env"].get("HEALTH_PORT", "0") == "0"


def _unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    parser.optionxform = str  # systemd keys are case-sensitive
    parser.read_string(UNIT.read_text())
    return parser


def _seconds(value: str) -> float:
    match = re.fullmatch(r"(\d+)(ms|s|min)?", value.strip())
    assert match, f"cannot read a time span from {value!r}"
    number, unit = int(match.group(1)), match.group(2) or "s"
    return number * {"ms": 0.001, "s": 1, "min": 60}[unit]


def test_systemd_template_unit_has_the_directives_a_graceful_multi_instance_deploy_needs():
    unit = _unit()
    assert set(unit.sections()) == {"Unit", "Service", "Install"}
    service = unit["Service"]
    assert shlex.split(service["ExecStart"])[-1:] == ["run"]
    assert shlex.split(service["ExecStart"])[0].endswith("/workerpool")
    assert service["Restart"] == "always"
    assert service["KillSignal"] == "SIGTERM"
    assert _seconds(service["TimeoutStopSec"]) > SHUTDOWN_TIMEOUT_MS / 1000
    assert service["KillMode"] in ("mixed", "control-group")
    assert "%i" in service["EnvironmentFile"], "each instance reads its own env file"
    assert service["NoNewPrivileges"] == "yes"
    assert service["ProtectSystem"] in ("strict", "full", "yes")
    assert service["PrivateTmp"] == "yes"
    assert service.get("User") and service["User"] != "root"
    assert "%i" in unit["Unit"]["Description"]
    assert unit["Install"]["WantedBy"] == "multi-user.target"
    assert UNIT.name.endswith("@.service"), "a template unit, for workerpool@NAME instances"


def _systemd_analyze_works() -> str | None:
    """None when `systemd-analyze verify` runs here; otherwise why not."""
    binary = shutil.which("systemd-analyze")
    if not binary:
        return "systemd-analyze is not installed"
    probe = Path("/tmp/workerpool-probe@x.service")
    probe.write_text("[Unit]\nDescription=probe\n[Service]\nExecStart=/bin/true\n")
    try:
        result = subprocess.run([binary, "verify", str(probe)], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"systemd-analyze does not run here: {exc}"
    finally:
        probe.unlink(missing_ok=True)
    if result.returncode != 0 or result.stderr.strip():
        return f"systemd-analyze verify does not work here: {(result.stderr or result.stdout).strip()[:200]}"
    return None


def _unit_for_this_virtualenv(tmp_path: Path, env_file: Path) -> str:
    """The shipped unit with its paths moved from /opt/workerpool to this checkout and this test's
    virtualenv, and its EnvironmentFile to `env_file`; every other line as shipped."""
    venv = Path(sys.prefix)
    assert (venv / "bin" / "workerpool").is_file(), f"no workerpool executable in {venv}/bin (pip install -e .)"
    text = UNIT.read_text()
    assert "/opt/workerpool/.venv/" in text and "EnvironmentFile=/etc/workerpool/%i.env" in text
    text = text.replace("/opt/workerpool/.venv/", f"{venv}/").replace("/opt/workerpool", str(ROOT))
    return text.replace("EnvironmentFile=/etc/workerpool/%i.env", f"EnvironmentFile={env_file}")


def test_systemd_analyze_verify_accepts_the_unit(tmp_path):
    reason = _systemd_analyze_works()
    if reason:
        pytest.skip(reason)
    env_file = tmp_path / "main.env"
    env_file.write_text("DATABASE_URL=\n")
    text = _unit_for_this_virtualenv(tmp_path, env_file)
    instance = tmp_path / "workerpool@main.service"
    instance.write_text(text)
    result = subprocess.run(["systemd-analyze", "verify", str(instance)], capture_output=True, text=True, timeout=60)
    complaints = [line for line in (result.stdout + result.stderr).splitlines() if "workerpool@" in line]
    assert result.returncode == 0 and not complaints, result.stdout + result.stderr
    # The check can fail: a bad directive, and an ExecStart that does not exist, are both reported.
    broken = tmp_path / "workerpool@broken.service"
    broken.write_text(text.replace("Restart=always", "Restart=sometimes"))
    result = subprocess.run(["systemd-analyze", "verify", str(broken)], capture_output=True, text=True, timeout=60)
    assert "workerpool@broken" in result.stdout + result.stderr
    missing = tmp_path / "workerpool@missing.service"
    missing.write_text(text.replace(f"{sys.prefix}/bin/workerpool", f"{tmp_path}/nowhere/workerpool"))
    result = subprocess.run(["systemd-analyze", "verify", str(missing)], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "nowhere/workerpool" in result.stdout + result.stderr


def test_the_units_command_line_runs_a_supervisor_that_stops_gracefully(tmp_path, env):
    """ExecStart exactly as the unit says (on this virtualenv), with the variables an EnvironmentFile
    would hold, from WorkingDirectory: it becomes a supervisor, and KillSignal stops it with exit 0."""
    env_file = tmp_path / "main.env"
    names = ("DATABASE_URL", "ALGOLIA_APP_ID", "ALGOLIA_ADMIN_KEY", "ALGOLIA_HOSTS", "SHUTDOWN_TIMEOUT")
    env_file.write_text("".join(f"{name}={env[name]}\n" for name in names))
    parser = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    parser.optionxform = str
    parser.read_string(_unit_for_this_virtualenv(tmp_path, env_file))
    service = parser["Service"]
    command = shlex.split(service["ExecStart"])
    environ = {k: v for k, v in env.items() if k not in names}
    environ.update(config_line.split("=", 1) for config_line in env_file.read_text().splitlines())
    proc = subprocess.Popen(
        command,
        env=environ,
        cwd=service["WorkingDirectory"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        for line in proc.stdout:
            if '"supervisor started"' in line or "worker started" in line:
                break
        else:
            pytest.fail(f"the unit's command exited {proc.wait()} without starting a supervisor")
        proc.send_signal(getattr(signal, service["KillSignal"]))
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, out
    assert '"supervisor_stopped"' in out


def _env_example() -> dict[str, str]:
    values = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        match = re.match(r"^([A-Z][A-Z0-9_]*)=(.*)$", line)
        if match:
            assert match.group(1) not in values, f"{match.group(1)} is listed twice"
            values[match.group(1)] = match.group(2)
    return values


def test_env_example_names_exactly_the_configuration_variables_with_their_defaults(tmp_path):
    listed = _env_example()
    assert set(listed) == set(config.VARIABLES), (
        f"missing {sorted(set(config.VARIABLES) - set(listed))}, unknown {sorted(set(listed) - set(config.VARIABLES))}"
    )
    # Loaded as a .env file with an empty environment, it yields exactly the defaults.
    assert config.load(environ={}, env_file=ROOT / ".env.example") == config.Settings()
    # Every variable has a comment above it (directly, or above a group of related ones).
    lines = (ROOT / ".env.example").read_text().splitlines()
    for number, line in enumerate(lines):
        if re.match(r"^[A-Z][A-Z0-9_]*=", line):
            above = [earlier for earlier in lines[:number] if earlier.strip()]
            assert above and (above[-1].startswith("#") or re.match(r"^[A-Z][A-Z0-9_]*=", above[-1])), line
    # The README's configuration table names no variable that .env.example lacks.
    readme = (ROOT / "README.md").read_text()
    table = readme.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    in_readme = set(re.findall(r"^\| `([A-Z_]+)`", table, re.M)) | set(re.findall(r"`, `([A-Z_]+)` \|", table))
    assert in_readme and in_readme <= set(listed), in_readme - set(listed)


def test_kubernetes_example_probes_healthz_on_every_interface_and_outwaits_a_graceful_stop():
    import yaml

    [deployment] = list(yaml.safe_load_all((ROOT / "deploy" / "kubernetes.yaml").read_text()))
    assert deployment["kind"] == "Deployment" and deployment["spec"]["replicas"] > 1
    pod = deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["command"] == ["workerpool", "run"]
    env = {e["name"]: e["value"] for e in container["env"]}
    # Only real settings, with valid values; the secrets come from a Secret, never from the file.
    assert set(env) <= set(config.VARIABLES), set(env) - set(config.VARIABLES)
    settings = config.load(environ=env, env_file=None)
    assert not {"DATABASE_URL", "ALGOLIA_APP_ID", "ALGOLIA_ADMIN_KEY"} & set(env)
    assert container["envFrom"] == [{"secretRef": {"name": "workerpool"}}]
    assert settings.health_host == "0.0.0.0", "probes come from the node to the pod's address"
    assert pod["terminationGracePeriodSeconds"] > settings.shutdown_timeout / 1000
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    for probe in ("readinessProbe", "livenessProbe"):
        get = container[probe]["httpGet"]
        assert get["path"] == "/healthz" and ports[get["port"]] == settings.health_port, probe
        assert container[probe]["timeoutSeconds"] > 3, "/healthz may take its 3 s database check"
    [migrate] = pod["initContainers"]
    # `migrate` runs as the owner (OWNER_DATABASE_URL), the pool as the worker role it sets up.
    assert migrate["command"] == ["workerpool", "migrate", "--worker-role", "workerpool_worker"]
    assert migrate["envFrom"] == container["envFrom"]
    owner = {"name": "DATABASE_URL", "valueFrom": {"secretKeyRef": {"name": "workerpool", "key": "OWNER_DATABASE_URL"}}}
    assert migrate["env"] == [owner]
    # /metrics merges the workers' files in the temporary directory: it must be writable.
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
