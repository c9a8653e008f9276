"""What an installed package promises: extras named in errors, no GPL import in the core, recipes by name, logging."""

import logging
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from speechllm import cli
from speechllm.errors import ConfigError, MissingExtraError
from speechllm.extras import EXTRAS, require_extra
from speechllm.recipes import recipe_names, recipe_path

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _distribution(requirement: str) -> str:
    return requirement.split(";")[0].split("[")[0].split("=")[0].split(">")[0].split("<")[0].strip().lower()


def test_every_package_an_error_names_is_in_that_extra_of_pyproject():
    optional = PYPROJECT["optional-dependencies"]
    for extra, modules in EXTRAS.items():
        declared = {_distribution(r) for r in optional[extra]}
        assert set(modules.values()) <= declared, extra
    assert set(EXTRAS) <= {_distribution(r) for r in optional["all"][0].split("[")[1].rstrip("]").split(",")}


def test_gpl_piper_is_not_a_core_dependency_nor_imported_by_the_core():
    core = {_distribution(r) for r in PYPROJECT["dependencies"]}
    synth = {_distribution(r) for r in PYPROJECT["optional-dependencies"]["synth"]}
    assert "piper-tts" not in core and "piper-tts" in synth
    code = ("import sys, speechllm, speechllm.cli, speechllm.data.synth as s; s.list_voices(); "
            "print(sorted(m for m in sys.modules if m == 'piper' or m.startswith('piper.')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_a_missing_extra_names_the_pip_install(monkeypatch):
    monkeypatch.setitem(EXTRAS, "eval", {**EXTRAS["eval"], "no_such_module_xyz": "no-such-dist"})
    with pytest.raises(MissingExtraError, match=r"WER scoring needs no-such-dist, which is not installed: "
                                                r"pip install 'speechllm\[eval\]'") as caught:
        require_extra("eval", "WER scoring")
    assert isinstance(caught.value, ImportError) and isinstance(caught.value, ConfigError)
    require_extra("eval", "WER scoring", ("jiwer",))  # only the modules asked for are checked


def test_serve_without_fastapi_says_which_extra_to_install():
    # sys.modules[name] = None makes the module unimportable, as when the package is not installed.
    code = ("import sys; sys.modules['fastapi'] = None; from speechllm.cli import main; "
            "sys.exit(main(['serve', 'some-model']))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 1
    assert "needs fastapi, which is not installed: pip install 'speechllm[serve]'" in done.stderr
    assert "Traceback" not in done.stderr


def test_recipes_are_found_by_name_and_files_still_work(tmp_path):
    assert {"default", "tiny"} <= set(recipe_names())
    assert recipe_path("tiny") == recipe_path("tiny.yaml") and recipe_path("tiny").is_file()
    assert recipe_path("tiny").parent.name == "recipes"  # inside the package, whatever the working folder
    own = tmp_path / "tiny"
    own.write_text("seed: 1\n")
    assert recipe_path(own) == own  # a file of that name wins over the packaged recipe
    with pytest.raises(ConfigError, match="not a file, nor a packaged recipe .*default.*tiny"):
        recipe_path("tinny")


def test_train_with_an_unknown_recipe_name_is_a_clear_error(capsys):
    assert cli.main(["train", "no-such-recipe"]) == 1
    captured = capsys.readouterr()
    assert "speechllm: error: recipe no-such-recipe not found" in captured.err and captured.out == ""


def test_quickstart_refuses_a_missing_real_manifest_before_any_work(tmp_path, capsys):
    assert cli.main(["quickstart", "--out-dir", str(tmp_path / "q"), "--real", str(tmp_path / "none.jsonl")]) == 1
    assert "no such manifest file" in capsys.readouterr().err
    assert not (tmp_path / "q").exists()


@pytest.mark.parametrize("flag, shown", [([], True), (["-q"], False)])
def test_messages_go_to_stderr_and_quiet_hides_them(flag, shown, capsys):
    cli.main(flag + ["train", "no-such-recipe"])  # configures the speechllm logger as every command does
    capsys.readouterr()
    logging.getLogger("speechllm.quickstart").info("a progress message")
    logging.getLogger("speechllm.quickstart").warning("a warning")
    captured = capsys.readouterr()
    assert captured.out == ""
    assert ("a progress message" in captured.err) == shown and "a warning" in captured.err
    cli.configure_logging(logging.INFO)
