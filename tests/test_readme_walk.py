"""bench/readme_walk.py walks a README's commands in order, as written, after entering the
environment: each timed with its longest silence, what cannot run here said (Modal) or run another
way (a notebook as a script), a result that disappears counted, a failure stopping the walk, and a
second walk going on from the first command without a good row (issue 43's Done-when)."""

import sys

from bench import readme_walk

ROWS = "checkpoint_path,task_id\n" + "".join(
    f"checkpoints/BabyAI-GoToLocal-v0/trial_0/checkpoint_{u}.pt,BabyAI-GoToLocal-v0\n" for u in (100, 200)
)


def readme(failing: str) -> str:
    return f"""# A project

## Quickstart

```bash
source .venv/bin/activate      # every command below assumes it
python -c "print('hello')"
```

### Waiting

```bash
python -c "import time; print('x', flush=True); time.sleep(1.5); print('y')"
modal run modal_app.py::main   # needs an account
marimo run nb.py
python write.py
python drop.py
{failing}
python -c "print('after')"
```
"""


def workdir(tmp_path):
    (tmp_path / ".venv" / "bin").mkdir(parents=True)
    # `python` on PATH is this interpreter, as the project's .venv would make it
    (tmp_path / ".venv" / "bin" / "activate").write_text(
        f'export PATH="{sys.executable.rsplit("/", 1)[0]}:$PATH"\n'
    )
    (tmp_path / "nb.py").write_text("print('notebook ran')\n")
    (tmp_path / "write.py").write_text(f"open('evaluation_results.csv', 'w').write({ROWS!r})\n")
    kept = ROWS.splitlines(keepends=True)[:2]
    (tmp_path / "drop.py").write_text(f"open('evaluation_results.csv', 'w').write({''.join(kept)!r})\n")
    (tmp_path / "README.md").write_text(readme('python -c "import sys; sys.exit(3)"'))
    return tmp_path


def rows(tmp_path):
    return {int(r["number"]): r for r in readme_walk.read_rows(tmp_path / "readme_walk" / "walk.csv")}


def test_the_walk_times_each_command_says_what_it_skipped_and_stops_at_a_failure(tmp_path, capsys):
    work = workdir(tmp_path)
    assert readme_walk.main(["--workdir", str(work)]) == 1
    got = rows(work)
    assert sorted(got) == [1, 2, 3, 4, 5, 6, 7, 8]  # stopped at 8; 9 never ran
    assert [got[n]["status"] for n in range(1, 9)] == [
        "ok",
        "ok",
        "ok",
        "skipped",
        "ok",
        "ok",
        "ok",
        "failed",
    ]
    assert got[2]["section"] == "Quickstart" and got[3]["section"] == "Waiting"
    assert 1.4 <= float(got[3]["longest_silence_s"]) <= float(got[3]["wall_s"])  # the 1.5 s sleep
    assert "modal" in got[4]["ran_as"] and got[4]["wall_s"] == ""
    assert (
        got[5]["ran_as"].startswith("python nb.py")
        and "notebook ran" in (work / "readme_walk" / "5.log").read_text()
    )
    assert (got[6]["dropped_results"], got[7]["dropped_results"]) == ("0", "1")  # drop.py lost update 200
    assert got[8]["returncode"] == "3"
    assert "stopped at command 8" in capsys.readouterr().err

    # Mended, the walk goes on from the failure: the good rows are kept, not run again.
    (work / "README.md").write_text(readme('python -c "print(2)"'))
    (work / "nb.py").write_text("raise SystemExit('must not run again')\n")
    assert readme_walk.main(["--workdir", str(work)]) == 0
    again = rows(work)
    assert [again[n]["status"] for n in (5, 8, 9)] == ["ok", "ok", "ok"]
    assert again[5]["finished_at"] == got[5]["finished_at"]
    table = capsys.readouterr().out
    assert "[5/" not in table and "[8/" in table and "[9/" in table

    assert readme_walk.main(["--workdir", str(work), "--markdown"]) == 0
    md = capsys.readouterr().out.splitlines()
    assert len(md) == 2 + 9 and "1 result(s) dropped" in md[2 + 6] and "skipped" in md[2 + 3]


def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys):
    work = workdir(tmp_path)
    for argv, message in (
        (["--workdir", str(tmp_path / "nope")], "is not a folder"),
        (["--workdir", str(work), "--only", "x"], "--only takes command numbers"),
        (["--workdir", str(work), "--only", "99"], "no command [99]"),
        (["--workdir", str(work), "--markdown"], "holds no walk yet"),
    ):
        try:
            readme_walk.main(argv)
        except SystemExit as e:
            assert e.code == 2
        err = capsys.readouterr().err
        assert message in err, (argv, err)
    (work / ".venv" / "bin" / "activate").unlink()
    try:
        readme_walk.main(["--workdir", str(work)])
    except SystemExit as e:
        assert e.code == 2
    assert "run `bash scripts/quickstart.sh` there first" in capsys.readouterr().err
    assert not (work / "readme_walk").exists()  # nothing written by a refusal


TRAIN = """import pathlib, sys
ck = pathlib.Path("ck") / "checkpoint_1.pt"
if ck.exists() and "--resume" not in sys.argv:
    sys.exit("error: 'ck' already holds checkpoints; use --resume, or another --trial/--seed/--checkpoint_dir")
ck.parent.mkdir(exist_ok=True)
ck.write_text("weights")
print("resumed" if "--resume" in sys.argv else "trained")
"""


def test_a_training_command_cut_off_by_an_earlier_walk_continues_with_resume(tmp_path, capsys):
    """A walk killed inside a training command leaves the run's checkpoints and the command's log but
    no row; the next walk's first try is refused ("use --resume") and it continues the run, as a
    reader would. A command the walk never started gets no second try: its refusal is the README's."""
    for cut in (True, False):
        work = workdir(tmp_path / str(cut))
        (work / "README.md").write_text("# P\n\n```bash\nsource .venv/bin/activate\npython train.py\n```\n")
        (work / "train.py").write_text(TRAIN)
        (work / "ck").mkdir()
        (work / "ck" / "checkpoint_1.pt").write_text("weights of the cut run")
        if cut:
            (work / "readme_walk").mkdir()
            (work / "readme_walk" / "2.log").write_text("[the walk was killed here]\n")
        assert readme_walk.main(["--workdir", str(work)]) == (0 if cut else 1)
        got = rows(work)[2]
        log = (work / "readme_walk" / "2.log").read_text()
        if cut:
            assert got["status"] == "ok" and got["ran_as"].endswith("continued with --resume")
            assert log.strip() == "resumed"
        else:
            assert got["status"] == "failed" and got["ran_as"] == "as written" and "use --resume" in log
    capsys.readouterr()
