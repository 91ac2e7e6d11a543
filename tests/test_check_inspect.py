"""The inspection recorded at export time stands in for a new one only while the
artifact is unchanged, and artifacts made of two files count both."""
from __future__ import annotations

from converters.check import artifact_file, artifact_files, inspection, save_inspection


class CountingTarget:
    def __init__(self):
        self.calls = 0

    def inspect(self, art_dir):
        self.calls += 1
        return {"size": sum(p.stat().st_size for p in artifact_files(art_dir)), "n": self.calls}


def test_recorded_inspection_is_reused_until_the_artifact_changes(tmp_path):
    (tmp_path / "metadata.json").write_text("{}")
    (tmp_path / "model.bin").write_bytes(b"\0" * 10)
    (tmp_path / "model.xml").write_text("<net/>")
    assert artifact_file(tmp_path).name == "model.xml"  # what an app opens
    assert [p.name for p in artifact_files(tmp_path)] == ["model.xml", "model.bin"]
    target = CountingTarget()
    save_inspection(target, tmp_path)
    assert target.calls == 1
    assert inspection(target, tmp_path) == {"size": 16, "n": 1} and target.calls == 1  # reused
    (tmp_path / "model.bin").write_bytes(b"\1" * 10)  # same size, other weights
    assert inspection(target, tmp_path) == {"size": 16, "n": 2}  # stale record: inspected again
