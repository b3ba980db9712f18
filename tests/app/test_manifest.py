"""sensor.toml: one test per refusal (each names the line), and hypothesis fuzzing."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tinyward.app.errors import ManifestError
from tinyward.app.manifest import load_manifest, parse_manifest

GOOD = """\
[app]
name = "people_counter"
version = "1.0.0"
entry = "people_counter_app:PeopleCounter"
models = ["model.npz"]

[input]
channels = ["distance_mm"]
sample_rate_hz = 20
dtype = "int16"
frame_shape = [20, 1]

[output]
max_results_per_minute = 60

[output.fields]
count = { type = "int", min = 0, max = 999 }
state = { type = "enum", values = ["normal", "anomaly"] }
level = { type = "float", min = 0.0, max = 1.0, step = 0.25 }
door = { type = "bool" }
"""
FOLDER = Path("/nonexistent-app")


def refused(text: str) -> ManifestError:
    with pytest.raises(ManifestError) as info:
        parse_manifest(text, FOLDER)
    return info.value


def test_good_manifest_parses():
    m = parse_manifest(GOOD, FOLDER)
    assert (m.name, m.entry_module, m.entry_callable) == (
        "people_counter", "people_counter_app", "PeopleCounter")
    assert m.models == (FOLDER / "model.npz",)
    assert m.input.frame_shape == (20, 1) and m.input.dtype == "int16"
    assert [f.cardinality for f in m.contract.fields] == [1000, 2, 5, 2]
    assert m.contract.max_results_per_minute == 60


def test_toml_syntax_error_names_its_line():
    error = refused(GOOD.replace('dtype = "int16"', "dtype = "))
    assert error.line == 10 and "not valid TOML" in error.reason


@pytest.mark.parametrize(
    ("old", "new", "line", "words"),
    [
        ('type = "int", min = 0', 'type = "integer", min = 0', 17, "unknown type"),
        ("min = 0, max = 999", "min = 5, max = 1", 17, "min 5 > max 1"),
        ('values = ["normal", "anomaly"]', "values = []", 18, "no values"),
        ('values = ["normal", "anomaly"]', 'values = ["a", "a"]', 18, "unique"),
        (", step = 0.25", "", 19, "needs a step"),
        ("step = 0.25", "step = 0.0", 19, "must be > 0"),
        ("step = 0.25", "step = nan", 19, "finite"),
        ('{ type = "bool" }', '{ type = "bool", max = 1 }', 20, "unknown key"),
        ("max_results_per_minute = 60", "max_results_per_minute = 0", 14, "unsatisfiable"),
        ("max_results_per_minute = 60", "max_results_per_minute = 1.5", 14, "integer"),
        ("max_results_per_minute = 60", "max_result_per_minute = 60", 14, "unknown key"),
        ('dtype = "int16"', 'dtype = "object"', 10, "numeric numpy dtype"),
        ('dtype = "int16"', 'dtype = "i2"', 10, "numeric numpy dtype"),
        ("frame_shape = [20, 1]", "frame_shape = [20, 2]", 11, "2 channels"),
        ("frame_shape = [20, 1]", "frame_shape = [0, 1]", 11, "both > 0"),
        ("sample_rate_hz = 20", "sample_rate_hz = -1", 9, "> 0"),
        ('channels = ["distance_mm"]', "channels = []", 8, "non-empty"),
        ('entry = "people_counter_app:PeopleCounter"', 'entry = "no colon"', 4, "module:callable"),
        ('models = ["model.npz"]', 'models = ["../keystore/key"]', 5, "inside the manifest"),
        ('models = ["model.npz"]', 'models = ["/etc/passwd"]', 5, "inside the manifest"),
        ('name = "people_counter"', 'name = "a b"', 2, "app.name"),
    ],
)
def test_semantic_error_names_line_and_reason(old, new, line, words):
    assert old in GOOD
    error = refused(GOOD.replace(old, new))
    assert error.line == line, error
    assert words in error.reason, error


@pytest.mark.parametrize(
    "dtype", ["9" * 45 + "float32", ",float32", "(((((((((int16", "int7", "float32,int8"],
    ids=["huge-subarray-ValueError", "comma-SyntaxError", "parens", "no-such-width", "record"],
)
def test_dtype_strings_numpy_chokes_on_are_refused(dtype):
    # Found by tests/fuzz/fuzz_manifest.py: numpy's dtype parser raised ValueError and
    # SyntaxError (it literal_evals parts of the string), which escaped parse_manifest.
    error = refused(GOOD.replace('dtype = "int16"', f'dtype = "{dtype}"'))
    assert error.line == 10 and "numeric numpy dtype" in error.reason, error


@pytest.mark.parametrize("nesting", ["[" * 3000, "[" * 3000 + "]" * 3000, "{b=" * 2000 + "1"
                                     + "}" * 2000])
def test_deeply_nested_toml_is_refused_not_a_recursion_error(nesting):
    # Found while checking what the atheris manifest harness can reach (coverage guidance
    # does not reward depth): tomllib recurses, and RecursionError escaped parse_manifest.
    error = refused(f"a = {nesting}\n")
    assert "nested too deeply" in error.reason, error


def test_missing_table_is_refused():
    error = refused(GOOD.split("[output]")[0])
    assert "missing [output]" in error.reason


def test_empty_fields_table_is_refused():
    text = GOOD.split("[output.fields]")[0] + "[output.fields]\n"
    error = refused(text)
    assert error.line == 16 and "no field" in error.reason


def test_unknown_top_level_table_is_refused():
    error = refused(GOOD + "\n[network]\nhost = 'x'\n")
    assert error.line == 22 and "unknown key 'network'" in error.reason


def _folder(tmp_path: Path, text: str = GOOD, module: bool = True, model: bool = True) -> Path:
    (tmp_path / "sensor.toml").write_text(text)
    if module:
        (tmp_path / "people_counter_app.py").write_text("")
    if model:
        (tmp_path / "model.npz").write_bytes(b"x")
    return tmp_path / "sensor.toml"


def test_load_checks_files(tmp_path):
    manifest = load_manifest(_folder(tmp_path))
    assert manifest.folder == tmp_path.resolve()


def test_missing_model_file_is_refused(tmp_path):
    with pytest.raises(ManifestError) as info:
        load_manifest(_folder(tmp_path, model=False))
    assert info.value.line == 5 and "does not exist" in info.value.reason


def test_missing_entry_module_is_refused(tmp_path):
    with pytest.raises(ManifestError) as info:
        load_manifest(_folder(tmp_path, module=False))
    assert info.value.line == 4 and "not found" in info.value.reason


def test_model_symlink_out_of_the_folder_is_refused(tmp_path):
    app = tmp_path / "app"
    app.mkdir()
    path = _folder(app, model=False)
    (tmp_path / "secret").write_bytes(b"k")
    (app / "model.npz").symlink_to(tmp_path / "secret")
    with pytest.raises(ManifestError) as info:
        load_manifest(path)
    assert "outside" in info.value.reason


def test_not_utf8_is_refused(tmp_path):
    path = tmp_path / "sensor.toml"
    path.write_bytes(b"[app]\nname = \"\xff\"\n")
    with pytest.raises(ManifestError) as info:
        load_manifest(path)
    assert info.value.line == 2


def test_good_app_in_the_repo_loads():
    m = load_manifest(Path(__file__).parent / "good" / "sensor.toml")
    assert m.name == "good_counter"


@settings(max_examples=300, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=400))
def test_fuzz_any_text_is_parsed_or_refused_with_manifest_error(text):
    try:
        parse_manifest(text, FOLDER)
    except ManifestError as error:
        assert error.line is None or 1 <= error.line <= max(1, text.count("\n") + 1) + 1


_LINES = GOOD.splitlines(keepends=True)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(
    st.lists(
        st.tuples(
            st.integers(0, len(_LINES) - 1),
            st.sampled_from(
                [
                    "",
                    "x",
                    "0",
                    "-1",
                    "1e309",
                    '"',
                    "[",
                    "]",
                    "=",
                    "{",
                    "}",
                    ",",
                    "\n",
                    "nan",
                    "true",
                    '"int"',
                    '"enum"',
                    '"float"',
                    "[]",
                    "99999999999999999999",
                ]
            ),
            st.integers(0, 60),
        ),
        max_size=4,
    )
)
def test_fuzz_mutated_manifest_is_parsed_or_refused(mutations):
    lines = list(_LINES)
    for index, insert, position in mutations:
        line = lines[index]
        position = min(position, len(line))
        lines[index] = line[:position] + insert + line[position + 1 :]
    text = "".join(lines)
    try:
        m = parse_manifest(text, FOLDER)
    except ManifestError:
        return
    # Whatever was accepted must still be a finite, non-empty contract.
    assert m.contract.fields and all(f.cardinality >= 1 for f in m.contract.fields)
    assert m.contract.max_results_per_minute >= 1
