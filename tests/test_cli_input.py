"""Bad input: exit status 2, one line that names the place, no traceback, nothing written."""

from __future__ import annotations

import json

import pytest

GOOD = """\
description: ok
collectors:
  test-marker: {}
triggers:
  t: {type: timer, after: 1}
"""


def assert_rejected(cli, result, *needles: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]
    assert list(cli.out.iterdir()) == []  # nothing written


@pytest.mark.parametrize(
    "ip, port, needle",
    [
        ("10.0.0.300", "7000", "IP '10.0.0.300' is not an IPv4 or IPv6 address"),
        ("nothost", "7000", "IP 'nothost'"),
        ("127.0.0.1", "0", "PORT '0' is not a port number from 1 to 65535"),
        ("127.0.0.1", "65536", "PORT '65536'"),
        ("127.0.0.1", "http", "PORT 'http'"),
    ],
)
def test_bad_target_arguments(cli, ip, port, needle):
    result = cli.run("--output-dir", str(cli.out), ip, port)
    assert_rejected(cli, result, needle)


def test_ipv6_target_is_accepted_by_check(cli):
    profile = cli.profile(GOOD)
    result = cli.run("check", "--plugin-dir", str(cli.plugin_dir()), "--profile", str(profile),
                     "--output-dir", str(cli.out), "::1", "7000")
    assert result.returncode == 0, result.stderr
    assert "ready to run" in result.stderr


def test_unknown_profile_name(cli):
    result = cli.run("--profile", "defualt", "--output-dir", str(cli.out), "127.0.0.1", "7000")
    assert_rejected(cli, result, "--profile defualt: no such profile", "did you mean 'default'")


@pytest.mark.parametrize(
    "text, needles",
    [
        pytest.param("collectors:\n  sysinfo: {}\n  dmesg: [unclosed\n",
                     ["PROFILE:", "YAML syntax error"], id="yaml-syntax-error"),
        pytest.param("triggers:\n  t:\n    type: timr\n    after: 1\n",
                     ["PROFILE:3:5: triggers.t:", "unknown trigger type 'timr'", "did you mean 'timer'"],
                     id="unknown-type-suggests-nearest"),
        pytest.param("triggers:\n  t:\n    type: timer\n    aftr: 1\n",
                     ["PROFILE:4:5: triggers.t: unknown option 'aftr'", "(did you mean 'after'?)"],
                     id="unknown-option-suggests-nearest"),
        pytest.param("triggers:\n  t:\n    type: timer\n    after: soon\n",
                     ["PROFILE:4:5: triggers.t:", "'after' must be a number", "'soon'"],
                     id="wrong-option-type"),
        pytest.param("colectors: {}\n",
                     ["PROFILE:1:1: unknown key 'colectors'", "did you mean 'collectors'"],
                     id="unknown-top-level-key"),
        pytest.param("settings:\n  compression: rar\n",
                     ["PROFILE:2:3: settings:", "'compression' must be one of"],
                     id="bad-setting-value"),
    ],
)
def test_bad_profile_is_rejected_naming_the_place(cli, text, needles):
    """PROFILE in a needle stands for the profile's path."""
    profile = cli.profile(text)
    result = cli.run("--profile", str(profile), "--output-dir", str(cli.out), "127.0.0.1", "7000")
    assert_rejected(cli, result, *(n.replace("PROFILE", str(profile)) for n in needles))


def test_bad_set_override_names_the_argument(cli):
    profile = cli.profile(GOOD)
    result = cli.run("--plugin-dir", str(cli.plugin_dir()), "--profile", str(profile),
                     "--set", "triggers.t.after=later", "--output-dir", str(cli.out),
                     "127.0.0.1", "7000")
    assert_rejected(cli, result, "--set triggers.t.after=later", "'after' must be a number")


def test_fatal_preflight_problem_reports_all_and_changes_nothing(cli):
    profile = cli.profile("""\
collectors:
  a: {type: test-faulty, problem: first broken thing}
  b: {type: test-faulty, problem: second broken thing}
triggers:
  t: {type: timer, after: 1}
""")
    result = cli.run("--plugin-dir", str(cli.plugin_dir()), "--profile", str(profile),
                     "--output-dir", str(cli.out), "127.0.0.1", "7000")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "a: first broken thing" in result.stderr
    assert "b: second broken thing" in result.stderr
    assert "fix: remove the problem option" in result.stderr
    assert list(cli.out.iterdir()) == []
    # the lock was taken first (before any plugin ran) and let go: it names a finished run
    assert json.loads((cli.tmp / "run" / "lock").read_text())["finished"] is True


def test_missing_output_dir_is_a_preflight_error(cli):
    profile = cli.profile(GOOD)
    missing = cli.tmp / "nope"
    result = cli.run("--plugin-dir", str(cli.plugin_dir()), "--profile", str(profile),
                     "--output-dir", str(missing), "127.0.0.1", "7000")
    assert result.returncode == 2
    assert f"output dir {missing} does not exist" in result.stderr
    assert not missing.exists()


@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf"])
def test_non_finite_numbers_are_refused(cli, value):
    profile = cli.profile(f"settings:\n  phase_timeout: {value}\ntriggers:\n"
                          f"  t: {{type: timer, after: 1, timeout: {value}}}\n")
    result = cli.run("--profile", str(profile), "--output-dir", str(cli.out), "127.0.0.1", "7000")
    assert_rejected(cli, result, f"{profile}:2:3: settings:", "'phase_timeout' must be a finite number")
