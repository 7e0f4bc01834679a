"""Generated sections (scripts/generate.py) match the code they come from."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_generated_sections_are_current():
    r = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "generate.py"), "--check"], capture_output=True, text=True
    )
    assert r.returncode == 0, r.stdout + r.stderr


def test_check_notices_a_stale_section(tmp_path, monkeypatch):
    """The check can fail: an edited constant in the shell script is found."""
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import generate
    finally:
        sys.path.pop(0)
    script = tmp_path / "bwrap-exec.sh"
    text = (REPO / "snakemake_deploy_nixsnake" / "data" / "bwrap-exec.sh").read_text()
    script.write_text(text.replace("_nx_sif_offset=32768", "_nx_sif_offset=4096"))
    [bwrap] = [sec for sec in generate._sections() if sec[0].name == "bwrap-exec.sh"]
    monkeypatch.setattr(generate, "_sections", lambda: [(script, *bwrap[1:])])
    monkeypatch.setattr(generate, "REPO", tmp_path)
    assert generate.main(["--check"]) == 1
    assert generate.main([]) == 0 and generate.main(["--check"]) == 0
    assert "_nx_sif_offset=32768" in script.read_text()
