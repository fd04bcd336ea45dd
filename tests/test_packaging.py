"""The wheel users install ships every module of the source tree (an editable install hides
a package missing from pyproject.toml), and the runtime install pulls no torch."""
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# source folder -> where its modules live inside the wheel
LAYOUT = {"mimicsearch": "mimicsearch", "train": "mimicsearch/train", "export": "mimicsearch/export"}


def test_wheel_ships_every_module(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path),
                    str(ROOT)], check=True)
    (wheel,) = tmp_path.glob("mimicsearch-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {
        f"{dest}/{p.relative_to(ROOT / src).as_posix()}"
        for src, dest in LAYOUT.items()
        for p in (ROOT / src).rglob("*.py")
    } | {f"mimicsearch/serve/page/{p.name}" for p in (ROOT / "mimicsearch/serve/page").iterdir()}
    assert expected - names == set()
    assert not any(n.startswith(("train/", "export/")) for n in names), "generic top-level modules"
    meta = next(n for n in names if n.endswith(".dist-info/METADATA"))
    requires = [line for line in zipfile.ZipFile(wheel).read(meta).decode().splitlines()
                if line.startswith("Requires-Dist:") and "extra ==" not in line]
    assert requires and not any("torch" in r for r in requires), requires
    serve = [line for line in zipfile.ZipFile(wheel).read(meta).decode().splitlines()
             if line.startswith("Requires-Dist:") and 'extra == "serve"' in line]
    assert serve and not any("torch" in r for r in serve), serve  # the server is torch-free
