"""Hostile input to the scenario loader and the CLI's flags: one line and exit 2, quickly, or accepted.

Table-driven cases reproduce what a hostile user tried (an anchor bomb, deep
nesting, huge integers, NUL bytes, /dev/zero, a FIFO, absurd counts); the
hypothesis properties throw random files, random values in every scenario
field and random flag text at the same code. Every case runs in-process under
an alarm, so a hang fails the test instead of stalling the suite. FUZZ_EXAMPLES=N
raises the number of examples per property (150 by default).
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clients.errors import InputError, excerpt
from fleet.cli import main
from fleet.cli.arguments import parse_seeds
from fleet.run.compare import parse_vary, variants
from fleet.config.reader import MAX_SCENARIO_BYTES, parse_yaml
from fleet.config import load_scenario, parse_scenario

TIME_LIMIT_S = 2.0   # per case, in-process (the CLI's own start-up, imports, is not counted)
BOMB_LIMIT_S = 1.0
MAX_LINE = 600       # one line, and a bounded one


@pytest.fixture(autouse=True)
def no_real_work(monkeypatch):
    """Every CLI case here must end before any work: a run or a benchmark starting is a failure, not a wait."""
    import fleet.bench
    import fleet.run.runner

    def refuse(*args, **kwargs):
        raise AssertionError("the work started")

    monkeypatch.setattr(fleet.run.runner, "run_scenario", refuse)
    monkeypatch.setattr(fleet.bench, "run_bench", refuse)


@contextlib.contextmanager
def alarm(seconds: float):
    """Raise TimeoutError in the main thread if the block runs longer than `seconds` (a blocked open too)."""
    def ring(signum, frame):
        raise TimeoutError(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, ring)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def run_cli(args: list[str], capsys, limit_s: float = TIME_LIMIT_S) -> tuple[int, list[str], float]:
    """main(args) under an alarm: (exit status, stderr lines, seconds)."""
    capsys.readouterr()
    started = time.perf_counter()
    with alarm(limit_s * 5):  # the alarm catches hangs; the limit itself is asserted below
        code = main(args)
    seconds = time.perf_counter() - started
    return code, capsys.readouterr().err.strip().splitlines(), seconds


def assert_one_line_error(code: int, lines: list[str], seconds: float, culprit: str, limit_s: float) -> None:
    assert code == 2, lines
    assert len(lines) == 1, lines
    assert lines[0].startswith("fleet: error:") and len(lines[0]) <= MAX_LINE, lines[0][:MAX_LINE]
    assert culprit in lines[0], lines[0]
    assert seconds < limit_s, f"{seconds:.2f} s"


# --------------------------------------------------------------------------- scenario files, table-driven


def anchor_bomb() -> str:
    """About 330 bytes that expand to 9**9 (387 million) strings."""
    lines = ['a: &a ["x","x","x","x","x","x","x","x","x"]']
    for level in range(1, 9):
        prev, cur = chr(ord("a") + level - 1), chr(ord("a") + level)
        lines.append(f"{cur}: &{cur} [{','.join(['*' + prev] * 9)}]")
    return "\n".join(lines) + "\nname: *i\n"


def nested_block(levels: int) -> str:
    return "name: x\nseed:\n" + "".join("  " * i + "- \n" for i in range(1, levels))


BASE = "name: fuzz\ndataset: {name: synthetic}\nfleet: {devices: 2}\n"

# (id, file text or bytes, expected: "ok" or a substring of the one-line error)
SCENARIO_CASES = [
    ("anchor bomb", anchor_bomb(), "expands to more than"),
    ("recursive alias", "name: x\nseed: &a [*a]\n", "alias refers to a node that contains it"),
    ("flow nesting 250", "name: x\nseed: " + "[" * 250 + "]" * 250 + "\n", "nesting deeper"),
    ("flow nesting 100000", "name: x\nseed: " + "[" * 100_000 + "\n", "nesting deeper"),
    ("block nesting 250", nested_block(250), "nesting deeper"),
    ("mapping nesting 250", "name: x\nseed: " + "{a: " * 250 + "1" + "}" * 250 + "\n", "nesting deeper"),
    ("alias stacking depth", "a: &a [[[[[[[[[[[1]]]]]]]]]]]\nb: &b [[[[[[[[[[*a]]]]]]]]]]\nname: x\n",
     "nesting deeper"),
    ("5000-digit integer", "name: x\nseed: " + "9" * 5000 + "\n", "too large"),
    ("5000-digit float field", "name: x\ntrain: {lr: " + "9" * 5000 + "}\n", "too large"),
    ("seed 2**64", f"name: x\nseed: {2**64}\n", "does not fit in 64 bits"),
    ("seed 2**63-1", f"name: x\nseed: {2**63 - 1}\n", "seed must be in [0, 4294967296)"),
    ("seed 2**32", f"name: x\nseed: {2**32}\n", "seed must be in"),
    ("seed 10**17", "name: x\nseed: 100000000000000000\n", "seed must be in"),
    ("seed -1", "name: x\nseed: -1\n", "seed must be in"),
    ("seed 2**32-1", BASE + f"seed: {2**32 - 1}\n", "ok"),
    ("hex integer", BASE + "seed: 0x10\n", "ok"),
    ("NUL in name", 'name: "a\\0b"\n', "control character"),
    ("newline in name", 'name: "a\\nb"\n', "control character"),
    ("NUL in output", 'name: x\noutput: "runs/\\0"\n', "control character"),
    ("NUL in data_dir", 'name: x\ndataset: {name: mnist, data_dir: "/tmp/\\0"}\n', "control character"),
    ("NUL in a key", 'name: x\n"se\\0ed": 1\n', "unknown key"),
    ("overlong name", "name: " + "n" * 1000 + "\n", "name is 1000 characters"),
    ("megabyte-scale string", "name: x\ndataset: {name: " + "d" * 500_000 + "}\n", "500,000 characters"),
    ("overlong key", "name: x\n? " + "k" * 100_000 + "\n: 1\n", "unknown key"),
    ("overlong implicit key", "name: x\n" + "k" * 100_000 + ": 1\n", "YAML syntax error"),
    ("overlong output component", "name: x\noutput: runs/" + "o" * 300 + "\n", "longer than 255 bytes"),
    ("name escapes runs/", "name: ../../x\n", "must not hold '/'"),
    ("name with slash", "name: a/b\n", "must not hold '/'"),
    ("name dot-dot", "name: '..'\n", "must not hold '/'"),
    ("name with backslash", "name: 'a\\b'\n", "must not hold '/'"),
    ("width 1000000", "name: x\ntrain: {width: 1000000}\n", "train.width"),
    ("width 0", "name: x\ntrain: {width: 0}\n", "train.width"),
    ("width -4", "name: x\ntrain: {width: -4}\n", "train.width"),
    ("width 65536 exceeds memory", "name: x\ntrain: {width: 65536}\n", "half of this machine's memory"),
    ("devices 1e9", "name: x\nfleet: {devices: 1000000000}\n", "fleet.devices"),
    ("devices 1e9 as text", "name: x\nfleet: {devices: 1e9}\n", "fleet.devices"),
    ("devices over examples", "name: x\nfleet: {devices: 245}\n", "training examples of a digits task"),
    ("devices over capped examples", "name: x\nfleet: {devices: 5}\ndataset: {max_per_class: 2}\n",
     "training examples"),
    ("devices at examples", "name: x\nfleet: {devices: 120}\ndataset: {name: synthetic}\n", "ok"),
    ("buffer 10**9", "name: x\nmethod: {buffer_size: 1000000000}\n", "method.buffer_size"),
    ("buffer 10**15", "name: x\nmethod: {buffer_size: 1000000000000000}\n", "method.buffer_size"),
    ("stagger 10**12", "name: x\nstream: {stagger_rounds: 1000000000000}\n", "federation.rounds"),
    ("rounds 10**9", "name: x\nfederation: {rounds: 1000000000}\n", "federation.rounds"),
    ("lr inf", "name: x\ntrain: {lr: .inf}\n", "finite"),
    ("lr nan", "name: x\ntrain: {lr: .nan}\n", "finite"),
    ("bool as count", "name: x\nfleet: {devices: true}\n", "fleet.devices"),
    ("list as section", "name: x\nfleet: [1, 2]\n", "fleet must be a mapping"),
    ("binary value", "name: !!binary aGVsbG8=\n", "name must be a string"),
    ("timestamp value", "name: 2001-12-14\n", "name must be a string"),
    ("set value", "name: !!set {a, b}\n", "name must be"),
    ("python tag", "name: !!python/object/apply:os.system ['true']\n", "YAML error"),
    ("duplicate key", "name: x\nname: y\n", "duplicate key"),
    ("two documents", "name: x\n---\nname: y\n", "YAML syntax error"),
    ("tab indentation", "name: x\nfleet:\n\tdevices: 2\n", "YAML syntax error"),
    ("empty file", "", "empty file"),
    ("top-level list", "- name\n", "top level must be a mapping"),
    ("top-level huge scalar", "x" * 100_000 + "\n", "top level must be a mapping"),
    ("not UTF-8", b"name: \xff\xfe\n", "not UTF-8"),
    ("NUL byte in file", b"name: x\x00\n", "YAML syntax error"),
    ("over 1 MiB", "name: x\n#" + "c" * MAX_SCENARIO_BYTES + "\n", "more than the 1,048,576"),
    ("small alias is fine", BASE.replace("name: fuzz", "name: &n fuzz") + "output: *n\n", "ok"),
    ("merge key is fine", "name: fuzz\ndataset: &d {name: synthetic}\nfleet:\n  <<: {devices: 2}\n", "ok"),
    ("unknown profile, long", "name: x\nfleet: {devices: 2, profiles: {" + "p" * 1000 + ": 2}}\n",
     "unknown device profile"),
]


@pytest.mark.parametrize("text,expected", [c[1:] for c in SCENARIO_CASES], ids=[c[0] for c in SCENARIO_CASES])
def test_scenario_file_fails_in_one_line_or_is_accepted(text, expected, tmp_path, capsys):
    path = tmp_path / "scenario.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    limit = BOMB_LIMIT_S if "anchor" in expected or "expands" in expected else TIME_LIMIT_S
    code, lines, seconds = run_cli(["validate", str(path)], capsys)
    if expected == "ok":
        assert code == 0 and not lines, lines
        assert seconds < limit
    else:
        assert_one_line_error(code, lines, seconds, expected, limit)


def test_the_anchor_bomb_fails_in_well_under_a_second(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(anchor_bomb())
    assert len(path.read_bytes()) < 400
    started = time.perf_counter()
    with alarm(10), pytest.raises(InputError, match="expands to more than 10,000 values"):
        load_scenario(path)
    assert time.perf_counter() - started < 0.5


@pytest.mark.parametrize("kind", ["/dev/zero", "fifo", "directory", "missing", "socket"])
def test_non_regular_scenario_paths_are_refused_without_a_blocking_read(kind, tmp_path, capsys):
    if kind == "/dev/zero":
        path = "/dev/zero"
    elif kind == "fifo":
        path = str(tmp_path / "scenario.yaml")
        os.mkfifo(path)  # nobody writes: opening it for reading would block for ever
    elif kind == "directory":
        path = str(tmp_path)
    elif kind == "socket":
        import socket

        path = str(tmp_path / "s")
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(path)
    else:
        path = str(tmp_path / "nope.yaml")
    for command in ("validate", "run", "compare"):
        code, lines, seconds = run_cli([command, path], capsys)
        expected = {"missing": "not found", "directory": "is a directory"}.get(kind, "not a regular file")
        assert_one_line_error(code, lines, seconds, expected, TIME_LIMIT_S)


def test_a_symlink_to_a_scenario_is_read(tmp_path):
    target = tmp_path / "real.yaml"
    target.write_text(BASE)
    (tmp_path / "link.yaml").symlink_to(target)
    assert load_scenario(tmp_path / "link.yaml").name == "fuzz"


# --------------------------------------------------------------------------- CLI flags, table-driven


BENCH_CASES = [
    (["--width", "-4"], "--width"),
    (["--width", "1000000"], "--width"),
    (["--width", "0"], "--width"),
    (["--width", "4" * 5000], "--width"),
    (["--seeds", "1e20"], "--seeds"),
    (["--seeds", "99999999999999999999"], "--seeds"),
    (["--seeds", "-1"], "--seeds"),
    (["--seeds", "9" * 5000], "--seeds"),
    (["--seeds", ",,,"], "--seeds"),
    (["--seeds", "0,\x01"], "--seeds"),
    (["--seeds", "3,1,3"], "seed twice"),
    (["--sparse-kernels", "--ablation", "tdm"], "--ablation full"),
    (["--epochs", "0"], "epochs"),
    (["--epochs", "1e20"], "--epochs"),
    (["--epochs", "99999999999999999999"], "--epochs"),
    (["--buffer-size", "1000000000"], "--buffer-size"),
    (["--buffer-size", "-1"], "buffer_size"),
    (["--lr", "nan"], "lr"),
    (["--lr", "inf"], "--lr"),
    (["--lr", "-1"], "lr"),
    (["--sparsity", "inf"], "--sparsity"),
    (["--dgm-keep", "nan"], "--dgm-keep"),
    (["--max-per-class", "0"], "max_per_class"),
    (["--dataset", "x" * 100_000], "invalid"),
    (["--json", "/no/such/folder/r.json"], "/no/such/folder"),
    (["--json", "/etc/passwd/r.json"], "/etc/passwd"),
    (["--ablation", "\x00"], "ablation"),
    (["--nope"], "unrecognized"),
]


@pytest.mark.parametrize("args,culprit", BENCH_CASES, ids=[" ".join(a)[:40] for a, _ in BENCH_CASES])
def test_bench_flag_fails_in_one_line(args, culprit, capsys):
    code, lines, seconds = run_cli(["bench", "sparcl", "--quiet", "--dataset", "synthetic", *args], capsys)
    if culprit == "invalid":  # a 100,000-character dataset name: named, cut short
        culprit = "unknown"
    assert_one_line_error(code, lines, seconds, culprit, TIME_LIMIT_S)


def test_bench_json_to_a_bad_path_fails_before_any_work(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    code, lines, seconds = run_cli(["bench", "sparcl", "--quiet", "--dataset", "synthetic", "--epochs", "50",
                                    "--json", str(tmp_path / "file" / "r.json")], capsys)
    assert_one_line_error(code, lines, seconds, "does not exist", TIME_LIMIT_S)


VARY_CASES = [
    ("fleet.profiles={rpi4: 1, rpi5: 1},{rpi4: 2", "YAML syntax error"),
    ("seed=[", "YAML syntax error"),
    ("seed=1,,2", "YAML syntax error"),
    ("seed={a: 1}}", "YAML syntax error"),
    ("seed=&a [*a]", "alias refers"),
    ("seed=" + "[" * 1000, "nesting deeper"),
    ("seed=" + "9" * 5000, "too large"),
    ("seed=18446744073709551616", "64 bits"),
    ("seed=-1", "seed must be in"),
    ("name=../x", "must not hold '/'"),
    ('name="\\0"', "control character"),
    ("train.width=1000000", "train.width"),
    ("fleet.devices=1000000000", "fleet.devices"),
    ("no-equals-sign", "--vary must look like"),
    ("=1,2", "--vary must look like"),
    ("seed=", "--vary must look like"),
    ("seed=" + ",".join(["1"] * 101), "more than 100"),
    ("nope.key=1", "unknown key"),
    ("fleet.devices.x=1", "is not a section"),
    ("seed.x=1", "seed must be an integer"),
    ("a..b=1", "dotted path"),
]


@pytest.mark.parametrize("vary,culprit", VARY_CASES, ids=[v[:40] for v, _ in VARY_CASES])
def test_compare_vary_fails_in_one_line(vary, culprit, tmp_path, capsys):
    path = tmp_path / "s.yaml"
    path.write_text(BASE)
    code, lines, seconds = run_cli(["compare", str(path), "--vary", vary, "--out", str(tmp_path / "o")], capsys)
    assert_one_line_error(code, lines, seconds, culprit, TIME_LIMIT_S)
    assert not (tmp_path / "o").exists()  # nothing was written


def test_vary_values_may_be_mappings_with_commas():
    scenario = parse_scenario(yaml.safe_load(BASE), source="t")
    key, values = parse_vary("fleet.profiles={rpi4: 1, rpi5: 1},{rpi4: 2}")
    assert (key, values) == ("fleet.profiles", [{"rpi4": 1, "rpi5": 1}, {"rpi4": 2}])
    chosen = variants(scenario, None, "fleet.profiles={rpi4: 1, rpi5: 1},{rpi4: 2}")
    assert [v.fleet.profiles for v in chosen.values()] == [{"rpi4": 1, "rpi5": 1}, {"rpi4": 2}]
    assert parse_vary("sparcl.enabled=true,false") == ("sparcl.enabled", [True, False])


def test_unwritable_out_fails_before_any_work(tmp_path, capsys):
    path = tmp_path / "s.yaml"
    path.write_text(BASE)
    (tmp_path / "file").write_text("")
    for command in ("run", "compare"):
        for out in (tmp_path / "file", tmp_path / "file" / "sub"):
            code, lines, seconds = run_cli([command, str(path), "--out", str(out)], capsys)
            assert_one_line_error(code, lines, seconds, str(tmp_path / "file"), TIME_LIMIT_S)
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        code, lines, seconds = run_cli(["run", str(path), "--out", str(locked / "o")], capsys)
        assert_one_line_error(code, lines, seconds, "not writable", TIME_LIMIT_S)


# --------------------------------------------------------------------------- properties (hypothesis)


FUZZ = settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", "150")), deadline=None,
                suppress_health_check=[HealthCheck.too_slow])

scalars = st.one_of(
    st.none(), st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70), st.integers(min_value=-3, max_value=300),
    st.floats(allow_nan=True, allow_infinity=True), st.floats(min_value=0, max_value=2),
    st.text(max_size=30), st.sampled_from(["digits", "synthetic", "derpp", "er", "fedavg", "mask-aware",
                                          "global", "local", "iid", "dirichlet", "tight", "rpi4", "auto"]),
)
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                      st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                      max_leaves=12)
FIELDS = ["name", "seed", "output", "dataset.name", "dataset.n_tasks", "dataset.max_per_class", "fleet.devices",
          "fleet.profiles", "partition.scheme", "partition.alpha", "stream.rounds_per_task",
          "stream.stagger_rounds", "method.name", "method.buffer_size", "method.minibatch", "method.alpha",
          "train.local_epochs", "train.batch_size", "train.lr", "train.backbone", "train.width",
          "sparcl.sparsity", "sparcl.dgm_keep", "federation.rounds", "federation.devices_per_round",
          "federation.min_available", "federation.aggregation", "federation.round_timeout_s",
          "timing.budget", "timing.deadline_s", "timing.keep_first", "timing.offline_rate_per_s", "bogus.key"]


def fails_in_one_line_or_passes(load) -> None:
    started = time.perf_counter()
    try:
        with alarm(10):
            load()
    except InputError as err:
        message = str(err)
        assert "\n" not in message and len(message) <= MAX_LINE, message[:MAX_LINE]
    assert time.perf_counter() - started < TIME_LIMIT_S


@FUZZ
@given(changes=st.dictionaries(st.sampled_from(FIELDS), values, min_size=1, max_size=4))
def test_any_values_in_any_fields_fail_in_one_line_or_pass(changes):
    def load():
        data = yaml.safe_load(BASE)
        for dotted, value in changes.items():
            *parents, leaf = dotted.split(".")
            node = data
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = value
        parse_scenario(parse_yaml(yaml.safe_dump(data), source="fuzz"), source="fuzz")

    fails_in_one_line_or_passes(load)


@FUZZ
@given(blob=st.one_of(st.binary(max_size=600), st.text(alphabet="[]{}:,&*!|>-'\"#\n 0123456789abx.eE+", max_size=400)))
def test_any_file_fails_in_one_line_or_passes(blob):
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "s.yaml"
        path.write_bytes(blob if isinstance(blob, bytes) else blob.encode())
        fails_in_one_line_or_passes(lambda: load_scenario(path))


@FUZZ
@given(text=st.text(max_size=60))
def test_any_seeds_text_fails_in_one_line_or_gives_valid_seeds(text):
    def load():
        seeds = parse_seeds(text)
        assert seeds and all(0 <= s < 2**32 for s in seeds)

    fails_in_one_line_or_passes(load)


_VARY_BASE = parse_scenario(yaml.safe_load(BASE), source="fuzz")


@FUZZ
@given(key=st.sampled_from([f for f in FIELDS if f != "bogus.key"]) | st.text(max_size=12),
       values_text=st.text(alphabet="[]{}:,&*!'\" 0123456789abx.-/\\", max_size=40))
def test_any_vary_text_fails_in_one_line_or_gives_valid_variants(key, values_text):
    fails_in_one_line_or_passes(lambda: variants(_VARY_BASE, None, f"{key}={values_text}"))


def test_excerpt_is_bounded_and_cheap():
    bomb = ["x"] * 9
    for _ in range(9):
        bomb = [bomb] * 9
    started = time.perf_counter()
    for value in (bomb, 10**5000, "\x00" * 10**6, {"k" * 10**6: 1}, b"\xff" * 10**6):
        assert len(excerpt(value)) <= 60 and "\n" not in excerpt(value)
    assert time.perf_counter() - started < 0.5
