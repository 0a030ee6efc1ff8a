"""`python -m trainer check-data` on a miniature generic-list dataset with bad files."""

import json
import subprocess
import sys

from .conftest import REPO
from .videos import write_corrupt, write_video


def test_check_data_reports_missing_unreadable_and_short(tmp_path):
    root = tmp_path / "mini"
    (root / "clips").mkdir(parents=True)
    (root / "classes.csv").write_text("id,name\n0,jump\n1,run\n")
    for name in ("a", "b", "c"):
        write_video(root / "clips" / f"{name}.mp4", frames=12, width=32, height=24)
    write_video(root / "clips" / "short.mp4", frames=3, width=32, height=24)
    write_corrupt(root / "clips" / "broken.mp4")
    (root / "train.txt").write_text(
        "clips/a.mp4 jump\nclips/b.mp4 run\nclips/short.mp4 run\nclips/gone.mp4 jump\n"
    )
    (root / "test.txt").write_text("clips/c.mp4 0\nclips/broken.mp4 1\n")
    cmd = [sys.executable, "-m", "trainer", "check-data", "--dataset", "list", "--root",
           str(root), "--frames", "8"]  # fmt: skip
    done = subprocess.run([*cmd, "--json"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["classes"] == 2
    assert report["splits"] == {"train": 3, "test": 2}  # gone.mp4 is not on disk
    assert report["missing"] == ["clips/gone"] or report["missing"][0].endswith("gone.mp4")
    assert [p.rsplit("/", 1)[-1] for p in report["unreadable"]] == ["broken.mp4"]
    assert [p.rsplit("/", 1)[-1] for p in report["short"]] == ["short.mp4"]
    table = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert table.returncode == 0 and "jump" in table.stdout and "unreadable: 1" in table.stdout
    bad = subprocess.run([*cmd[:-4], "--root", str(tmp_path / "nope")], cwd=REPO,
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert bad.returncode == 2 and "--root folder not found" in bad.stderr
