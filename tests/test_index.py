from __future__ import annotations

import csv
import json
from collections import Counter, defaultdict
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import DFDC, FFPP, FFPP_SPLITS, need_shared
from truthinmotion.core.errors import ConfigError
from truthinmotion.data.index import IndexConfig, group_split, index_dataset, read_manifest


def _official() -> dict[str, str]:
    out = {}
    for split in ("train", "val", "test"):
        for pair in json.loads((FFPP_SPLITS / f"{split}.json").read_text()):
            for vid in pair:
                out[vid] = split
    return out


def _no_group_crosses(rows) -> None:
    splits = defaultdict(set)
    for r in rows:
        splits[r["group"]].add(r["split"])
    assert all(len(s) == 1 for s in splits.values()), splits


def test_ffpp_official_splits_and_groups(tmp_path):
    need_shared()
    cfg = IndexConfig(format="ffpp", splits_dir=str(FFPP_SPLITS))
    result = index_dataset(FFPP, tmp_path, cfg)
    rows = read_manifest(tmp_path)
    assert len(rows) == 7
    by_id = {r["video_id"]: r for r in rows}
    assert by_id["Deepfakes-519_515"]["label"] == 1 and by_id["original-519"]["label"] == 0
    assert by_id["NeuralTextures-004_982"]["method"] == "NeuralTextures"
    # A_B joins A: the fake and its target's original share a group.
    assert by_id["original-004"]["group"] == by_id["NeuralTextures-004_982"]["group"]
    assert by_id["original-634"]["group"] == by_id["FaceSwap-634_660"]["group"]
    assert by_id["original-004"]["group"] != by_id["original-519"]["group"]
    official = _official()
    for r in rows:
        target = Path(r["path"]).stem.split("_")[0]
        assert r["split"] == official[target], r
    _no_group_crosses(rows)
    assert "7 videos" in result.summary().replace("indexed 7 videos", "7 videos")


def test_dfdc_reports_missing_and_groups_fakes_with_originals(tmp_path):
    need_shared()
    result = index_dataset(DFDC, tmp_path, IndexConfig(format="dfdc", seed=3))
    rows = read_manifest(tmp_path)
    assert sorted(r["video_id"] for r in rows) == ["brtujopkby", "widuwuoiur"]
    assert all(r["label"] == 1 and r["dataset"] == "dfdc" for r in rows)
    assert len(result.missing) == 2
    with open(tmp_path / "errors.csv") as f:
        errors = list(csv.DictReader(f))
    assert sorted(e["video_id"] for e in errors) == ["awnfpubqmo", "yhffcuhhjy"]
    assert {e["stage"] for e in errors} == {"index"} and {e["status"] for e in errors} == {"missing"}


def test_dfdc_fake_shares_group_with_its_original(tmp_path):
    part = tmp_path / "dfdc_train_part_1"
    _touch_tree(part, ["aaa.mp4", "zzz.mp4", "mmm.mp4", "ccc.mp4"])
    meta = {
        "zzz.mp4": {"label": "REAL", "split": "train", "original": None},
        "aaa.mp4": {"label": "FAKE", "split": "train", "original": "zzz.mp4"},
        "mmm.mp4": {"label": "FAKE", "split": "train", "original": "zzz.mp4"},
        "ccc.mp4": {"label": "REAL", "split": "train", "original": None},
    }
    (part / "metadata.json").write_text(json.dumps(meta))
    for seed in range(5):
        index_dataset(tmp_path, tmp_path / "w", IndexConfig(format="dfdc", seed=seed))
        rows = {r["video_id"]: r for r in read_manifest(tmp_path / "w")}
        assert rows["aaa"]["group"] == rows["zzz"]["group"] == rows["mmm"]["group"] != rows["ccc"]["group"]
        assert rows["aaa"]["split"] == rows["zzz"]["split"] == rows["mmm"]["split"]
        assert (rows["zzz"]["label"], rows["aaa"]["label"]) == (0, 1)


def _touch_tree(root: Path, names: list[str]) -> None:
    for n in names:
        (root / n).parent.mkdir(parents=True, exist_ok=True)
        (root / n).write_bytes(b"")


def test_folder_ratios_and_methods(tmp_path):
    root = tmp_path / "data"
    _touch_tree(root, [f"real/r{i:03d}.mp4" for i in range(100)])
    _touch_tree(root, [f"fake/Swap/f{i:03d}.mp4" for i in range(60)] + [f"fake/Reenact/g{i:03d}.avi" for i in range(40)])
    (root / "fake" / "notes.txt").write_text("not a video")
    index_dataset(root, tmp_path / "w", IndexConfig(format="folder", seed=1))
    rows = read_manifest(tmp_path / "w")
    assert len(rows) == 200
    assert Counter(r["method"] for r in rows) == {"real": 100, "Swap": 60, "Reenact": 40}
    counts = Counter((r["split"], r["label"]) for r in rows)
    for label in (0, 1):  # stratified: each label follows the ratios on its own
        assert (counts["train", label], counts["val", label], counts["test", label]) == (70, 20, 10)
    _no_group_crosses(rows)
    # Seeded: the same seed gives the same split, another seed a different one.
    index_dataset(root, tmp_path / "w2", IndexConfig(format="folder", seed=1))
    index_dataset(root, tmp_path / "w3", IndexConfig(format="folder", seed=2))
    split = lambda w: {r["video_id"]: r["split"] for r in read_manifest(tmp_path / w)}  # noqa: E731
    assert split("w") == split("w2") and split("w") != split("w3")


def test_a_folder_without_real_or_fake_is_real_unless_something_says_otherwise(tmp_path, caplog):
    """Videos straight under the root (no real/ or fake/) are real videos, for --fakes pseudo. A
    folder on their path named for a class or a dataset's layout, or a DFDC metadata.json, says
    they are not all real: refused, naming it; so is a work directory inside the folder (the
    videos it makes would come back as real ones)."""
    _touch_tree(tmp_path / "mine", ["a.mp4", "trip/b.mov"])
    index_dataset(tmp_path / "mine", tmp_path / "w", IndexConfig(format="folder"))
    assert {(r["video_id"], r["label"], r["method"]) for r in read_manifest(tmp_path / "w")} == {
        ("real-a", 0, "real"), ("real-trip__b", 0, "real")}
    for name, layout, says in (
            ("above-ffpp", "ffpp/manipulated_sequences/Deepfakes/c23/videos/1_2.mp4", "'manipulated_sequences'"),
            ("cased", "Fake/x.mp4", "'Fake'"), ("above-demo", "data/fake/f.mp4", "'fake'"),
            ("dfdc", "train/part_0/v.mp4", "metadata.json")):
        _touch_tree(tmp_path / name, [layout] + (["train/part_0/metadata.json"] if name == "dfdc" else []))
        with pytest.raises(ConfigError, match=f"as REAL, but .*{says}"):
            index_dataset(tmp_path / name, tmp_path / f"w-{name}", IndexConfig(format="folder"))
    with pytest.raises(ConfigError, match="work directory .* is inside"):
        index_dataset(tmp_path / "mine", tmp_path / "mine" / "out" / "work", IndexConfig(format="folder"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="of real videos alone"):
        index_dataset(tmp_path / "empty", tmp_path / "w-empty", IndexConfig(format="folder"))
    # With real/ and fake/, videos beside them are not indexed, and the index says so.
    _touch_tree(tmp_path / "both", ["real/r.mp4", "fake/f.mp4", "loose.mp4"])
    with caplog.at_level("WARNING"):
        index_dataset(tmp_path / "both", tmp_path / "w-both", IndexConfig(format="folder"))
    assert len(read_manifest(tmp_path / "w-both")) == 2
    assert "1 videos of" in caplog.text and "outside real/ and fake/ and are not indexed (loose.mp4)" in caplog.text


def test_csv_groups_splits_and_missing(tmp_path):
    _touch_tree(tmp_path, ["v/a.mp4", "v/b.mp4", "v/c.mp4", "v/d.mp4"])
    (tmp_path / "list.csv").write_text(
        "path,label,group,split,method\n"
        "v/a.mp4,real,p1,,\n"
        "v/b.mp4,fake,p1,,swap\n"
        "v/c.mp4,1,p2,test,\n"
        "v/d.mp4,0,p3,,\n"
        "v/missing.mp4,1,p3,,\n"
    )
    result = index_dataset(tmp_path / "list.csv", tmp_path / "w", IndexConfig(format="csv"))
    rows = {r["video_id"]: r for r in read_manifest(tmp_path / "w")}
    assert set(rows) == {"a", "b", "c", "d"} and result.missing == [str(tmp_path / "v/missing.mp4")]
    assert rows["a"]["split"] == rows["b"]["split"]
    assert rows["c"]["split"] == "test" and rows["b"]["method"] == "swap" and rows["a"]["label"] == 0
    (tmp_path / "bad.csv").write_text("path,label\nv/a.mp4,maybe\n")
    with pytest.raises(ConfigError, match="label 'maybe'"):
        index_dataset(tmp_path / "bad.csv", tmp_path / "w", IndexConfig(format="csv"))


def test_celebdf_test_list_and_identity_groups(tmp_path):
    root = tmp_path / "Celeb-DF-v2"
    names = [f"Celeb-real/id{i}_{j:04d}.mp4" for i in range(10) for j in range(3)]
    names += [f"Celeb-synthesis/id{i}_id{i + 1}_{j:04d}.mp4" for i in range(0, 10, 2) for j in range(2)]
    names += [f"YouTube-real/{j:05d}.mp4" for j in range(10)]
    _touch_tree(root, names)
    (root / "List_of_testing_videos.txt").write_text(
        "1 YouTube-real/00001.mp4\n1 YouTube-real/00002.mp4\n0 Celeb-synthesis/id2_id3_0000.mp4\n"
    )
    result = index_dataset(root, tmp_path / "w", IndexConfig(format="celebdf"))
    rows = read_manifest(tmp_path / "w")
    by_id = {r["video_id"]: r for r in rows}
    listed = ("YouTube-real-00001", "YouTube-real-00002", "Celeb-synthesis-id2_id3_0000")
    # The official test list is the test split, video by video; everything else is train or val.
    assert {r["video_id"] for r in rows if r["split"] == "test"} == set(listed)
    # Small components of pairs stay whole: id2's real videos go with the fakes of id2_id3.
    assert by_id["Celeb-real-id2_0000"]["group"] == by_id["Celeb-synthesis-id2_id3_0001"]["group"]
    _no_group_crosses([r for r in rows if r["video_id"] not in listed])
    assert result.shared_identities >= 1 and "appear in more than one split" in result.summary()


def test_chained_identities_follow_the_ratios(tmp_path):
    """Celeb-DF-style chains id0_id1, id1_id2, ...: one union-find component would put all 59
    videos in one split; cut back to target identities, the split follows the ratios."""
    root = tmp_path / "celeb"
    names = [f"Celeb-real/id{i}_0000.mp4" for i in range(30)]
    names += [f"Celeb-synthesis/id{i}_id{i + 1}_0000.mp4" for i in range(29)]
    _touch_tree(root, names)
    result = index_dataset(root, tmp_path / "w", IndexConfig(format="celebdf"))
    rows = read_manifest(tmp_path / "w")
    got = Counter(r["split"] for r in rows)
    for split, share in (("train", 0.7), ("val", 0.2), ("test", 0.1)):
        assert abs(got[split] - share * len(rows)) <= 3, got
    _no_group_crosses(rows)
    # Each fake sits with its target identity; the source identities that cross are reported.
    by_id = {r["video_id"]: r for r in rows}
    assert all(by_id[f"Celeb-synthesis-id{i}_id{i + 1}_0000"]["group"] == by_id[f"Celeb-real-id{i}_0000"]["group"]
               for i in range(29))
    assert result.shared_identities > 0 and not result.warnings


def test_ffpp_default_methods_are_the_standard_four(tmp_path, capsys):
    from truthinmotion.apps.cli import main

    methods = ("Deepfakes", "Face2Face", "FaceSwap", "NeuralTextures", "FaceShifter", "DeepFakeDetection")
    _touch_tree(tmp_path / "ff", ["original_sequences/youtube/c23/videos/001.mp4",
                                  *[f"manipulated_sequences/{m}/c23/videos/001_002.mp4" for m in methods]])
    assert main(["index", str(tmp_path / "ff"), "--format", "ffpp", "-o", str(tmp_path / "w")]) == 0
    out = capsys.readouterr().out
    assert {r["method"] for r in read_manifest(tmp_path / "w")} == {"original", *methods[:4]}
    assert "methods: Deepfakes (1), Face2Face (1), FaceSwap (1), NeuralTextures (1), original (1)" in out
    assert "warning: the train split has" in out or "warning: the val split has" in out  # 5 videos, one real
    assert main(["index", str(tmp_path / "ff"), "--format", "ffpp", "-o", str(tmp_path / "w"), "--methods", "all"]) == 0
    assert {r["method"] for r in read_manifest(tmp_path / "w")} == {"original", *methods}


def test_hostile_and_malformed_inputs(tmp_path, capsys):
    from truthinmotion.apps.cli import main

    _touch_tree(tmp_path / "v", ["a.mp4", "b.mp4"])
    # A video id that would write outside the work directory is refused.
    (tmp_path / "evil.csv").write_text("path,label,video_id\nv/a.mp4,real,../../escape\n")
    with pytest.raises(ConfigError, match="cannot name a file inside the work directory"):
        index_dataset(tmp_path / "evil.csv", tmp_path / "w", IndexConfig(format="csv"))
    assert not (tmp_path / "w" / "manifest.csv").exists()
    # A spreadsheet's UTF-8 BOM does not break the header.
    (tmp_path / "bom.csv").write_text("\ufeffpath,label\nv/a.mp4,real\nv/b.mp4,fake\n", encoding="utf-8")
    index_dataset(tmp_path / "bom.csv", tmp_path / "w", IndexConfig(format="csv"))
    assert len(read_manifest(tmp_path / "w")) == 2
    (tmp_path / "empty.csv").write_text("path,label\n")
    with pytest.raises(ConfigError, match="lists no videos"):
        index_dataset(tmp_path / "empty.csv", tmp_path / "w2", IndexConfig(format="csv"))
    (tmp_path / "clash.csv").write_text("path,label,group,split\nv/a.mp4,real,g,train\nv/b.mp4,fake,g,test\n")
    with pytest.raises(ConfigError, match="group 'g' is in split 'train'"):
        index_dataset(tmp_path / "clash.csv", tmp_path / "w2", IndexConfig(format="csv"))
    with pytest.raises(ConfigError, match="finite"):
        IndexConfig().updated({"ratios": (float("inf"), 0.2, 0.1)})
    # Malformed official splits and DFDC metadata are usage errors (exit 2), not tracebacks.
    _touch_tree(tmp_path / "ff", ["original_sequences/youtube/c23/videos/001.mp4"])
    (tmp_path / "splits").mkdir()
    for split in ("train", "val", "test"):
        (tmp_path / "splits" / f"{split}.json").write_text("[[\"001\", ")
    assert main(["index", str(tmp_path / "ff"), "--format", "ffpp", "--splits", str(tmp_path / "splits"),
                 "-o", str(tmp_path / "w3")]) == 2
    assert "not valid JSON" in capsys.readouterr().err
    (tmp_path / "dfdc" / "part").mkdir(parents=True)
    (tmp_path / "dfdc" / "part" / "metadata.json").write_text('["a.mp4"]')
    assert main(["index", str(tmp_path / "dfdc"), "--format", "dfdc", "-o", str(tmp_path / "w4")]) == 2
    assert "expected" in capsys.readouterr().err
    assert main(["index", str(tmp_path / "ff"), "--format", "ffpp", "--ratios", "inf,0.2,0.1", "-o", str(tmp_path / "w5")]) == 2


def test_missing_listed_videos_exit_1(tmp_path, capsys):
    need_shared()
    from truthinmotion.apps.cli import main

    assert main(["index", str(DFDC), "--format", "dfdc", "-o", str(tmp_path / "w")]) == 1
    assert "listed but missing on disk" in capsys.readouterr().out
    assert len(read_manifest(tmp_path / "w")) == 2  # the videos present are indexed all the same


def test_unknown_format_and_keys_are_errors(tmp_path):
    with pytest.raises(ConfigError, match="not one of"):
        IndexConfig().updated({"format": "youtube"})
    with pytest.raises(ConfigError, match="unknown key.*ratio"):
        IndexConfig().updated({"ratio": (0.5, 0.5, 0)})
    with pytest.raises(ConfigError, match="dataset root not found"):
        index_dataset(tmp_path / "nope", tmp_path / "w", IndexConfig())


@settings(max_examples=60, deadline=None)
@given(
    pairs=st.lists(st.tuples(st.integers(0, 40), st.integers(0, 40)), min_size=1, max_size=60),
    seed=st.integers(0, 10_000),
)
def test_ffpp_like_groups_never_cross_splits(tmp_path_factory, pairs, seed):
    """Random A_B fakes over shared identities: no group crosses splits, and an identity lands in
    two splits only where a chain was cut back to targets, which the result counts."""
    root = tmp_path_factory.mktemp("ffpp")
    ids = {a for p in pairs for a in p}
    _touch_tree(root, [f"original_sequences/youtube/c23/videos/{i:03d}.mp4" for i in ids])
    _touch_tree(root, [f"manipulated_sequences/Deepfakes/c23/videos/{a:03d}_{b:03d}.mp4" for a, b in pairs if a != b])
    result = index_dataset(root, root / "w", IndexConfig(format="ffpp", seed=seed))
    rows = read_manifest(root / "w")
    _no_group_crosses(rows)
    split_of = defaultdict(set)
    for r in rows:
        for identity in Path(r["path"]).stem.split("_"):
            split_of[identity].add(r["split"])
    assert sum(len(s) > 1 for s in split_of.values()) == result.shared_identities
    parent = {i: i for i in ids}

    def find(x):
        while parent[x] != x:
            x = parent[x]
        return x

    for a, b in pairs:
        parent[find(a)] = find(b)
    videos = Counter(find(int(i)) for r in rows for i in Path(r["path"]).stem.split("_")[:1])
    if max(videos.values()) <= max(10, -(-len(rows) * 2 // 100)):  # no chain was cut: nothing crosses
        assert result.shared_identities == 0


@settings(max_examples=50, deadline=None)
@given(sizes=st.lists(st.integers(1, 3), min_size=30, max_size=300), seed=st.integers(0, 1000))
def test_group_split_follows_ratios(sizes, seed):
    groups = {f"g{i}": (0, n) for i, n in enumerate(sizes)}
    out = group_split(groups, (0.7, 0.2, 0.1), seed)
    assert set(out) == set(groups)
    total = sum(sizes)
    got = Counter()
    for g, split in out.items():
        got[split] += sum(groups[g])
    for split, share in (("train", 0.7), ("val", 0.2), ("test", 0.1)):
        assert abs(got[split] - share * total) <= 3, (got, total)


def _warnings(caplog) -> str:
    return "\n".join(r.getMessage() for r in caplog.records if r.levelname == "WARNING" and r.name.startswith("truthinmotion.data."))


def test_formats_that_cannot_join_a_person_say_so(tmp_path, caplog):
    """Folder, a CSV without groups and DFDC's actors: each warns that one person can be on both
    sides of a split; a CSV with a group for every video does not."""
    caplog.set_level("WARNING", logger="truthinmotion.data")
    root = tmp_path / "data"
    _touch_tree(root, [f"real/r{i}.mp4" for i in range(4)] + [f"fake/f{i}.mp4" for i in range(4)])
    index_dataset(root, tmp_path / "w1", IndexConfig(format="folder"))
    assert "every video is its own group" in _warnings(caplog)
    caplog.clear()
    (tmp_path / "grouped.csv").write_text("path,label,group\n" + "".join(
        f"data/{k}/{k[0]}{i}.mp4,{k},p{i}\n" for k in ("real", "fake") for i in range(4)))
    index_dataset(tmp_path / "grouped.csv", tmp_path / "w2", IndexConfig(format="csv"))
    assert "group" not in _warnings(caplog)  # (the 8 videos fill no test split: that warning stays)
    (tmp_path / "plain.csv").write_text("path,label\n" + "".join(
        f"data/{k}/{k[0]}{i}.mp4,{k}\n" for k in ("real", "fake") for i in range(4)))
    index_dataset(tmp_path / "plain.csv", tmp_path / "w3", IndexConfig(format="csv"))
    assert "8 of 8 videos have no group (no group column)" in _warnings(caplog)
    caplog.clear()
    (tmp_path / "some.csv").write_text("path,label,group\n" + "".join(
        f"data/{k}/{k[0]}{i}.mp4,{k},{'p' if i else ''}{i if i else ''}\n" for k in ("real", "fake") for i in range(4)))
    index_dataset(tmp_path / "some.csv", tmp_path / "w4", IndexConfig(format="csv"))
    assert "2 of 8 videos have no group (empty group cells)" in _warnings(caplog)
    caplog.clear()
    # DFDC: fakes join their original, actors cannot be joined; fakes whose original is absent are counted.
    part = tmp_path / "dfdc" / "dfdc_train_part_1"
    _touch_tree(part, ["aaa.mp4", "zzz.mp4", "mmm.mp4"])
    (part / "metadata.json").write_text(json.dumps({
        "zzz.mp4": {"label": "REAL"}, "aaa.mp4": {"label": "FAKE", "original": "zzz.mp4"},
        "mmm.mp4": {"label": "FAKE", "original": "gone.mp4"}}))
    index_dataset(tmp_path / "dfdc", tmp_path / "w5", IndexConfig(format="dfdc"))
    text = _warnings(caplog)
    assert "names no actor" in text and "1 of 2 fakes have no original among the indexed videos" in text


def test_the_manifest_hash_names_the_split_assignment(tmp_path):
    """Equal for the same (video, group, split) assignment in any order and whatever the other
    columns; different when a video moves between splits."""
    from truthinmotion.data.index import manifest_hash, split_hash

    root = tmp_path / "data"
    _touch_tree(root, [f"real/r{i:02d}.mp4" for i in range(20)] + [f"fake/f{i:02d}.mp4" for i in range(20)])
    index_dataset(root, tmp_path / "a", IndexConfig(format="folder", seed=1))
    index_dataset(root, tmp_path / "b", IndexConfig(format="folder", seed=1))
    index_dataset(root, tmp_path / "c", IndexConfig(format="folder", seed=2))
    assert manifest_hash(tmp_path / "a") == manifest_hash(tmp_path / "b") != manifest_hash(tmp_path / "c")
    rows = read_manifest(tmp_path / "a")
    triples = [(r["video_id"], r["group"], r["split"]) for r in rows]
    assert split_hash(reversed(triples)) == manifest_hash(tmp_path / "a")
    text = (tmp_path / "a" / "manifest.csv").read_text()
    (tmp_path / "a" / "manifest.csv").write_text(text.replace(",real,", ",Real,"))  # a method renamed: same split
    assert manifest_hash(tmp_path / "a") == manifest_hash(tmp_path / "b")
    first = next(i for i, t in enumerate(triples) if t[2] == "train")
    moved = [(v, g, "test" if i == first else s) for i, (v, g, s) in enumerate(triples)]
    assert split_hash(moved) != split_hash(triples)
