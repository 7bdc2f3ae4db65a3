"""Problem files with an image column: every accepted form of the cell, and bad image rows as errors that name
the file and line, or with data.skip_bad_rows as counted skips."""
from __future__ import annotations

import base64
import io
import json

import pytest
from PIL import Image

from kimi_rl.config import ConfigError, DataConfig
from kimi_rl.config.loader import load_config
from kimi_rl.data.files import DataFileError
from kimi_rl.pipeline import prepare
from kimi_rl.tasks import load_task
from kimi_rl.tasks.vision import image_kwargs, problem_images


def _png(size=(32, 24), color=(200, 10, 10)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


def _uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _data(path, **kw) -> DataConfig:
    return DataConfig(source="file", path=str(path), sampler="uniform", heldout_fraction=0.5, **kw)


def _all(task):
    return {p.uid: p for p in task.train + task.heldout}


def test_every_form_of_image_cell_loads_checked_and_placed(tmp_path):
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "red.png").write_bytes(_png(color=(255, 0, 0)))
    green, blue = _png(color=(0, 255, 0)), _png((40, 40), (0, 0, 255))
    f = _write(tmp_path / "v.jsonl", [
        {"id": "path", "question": "What colour?", "answer": "red", "image": "img/red.png"},  # relative to the file
        {"id": "uri", "question": "What colour?", "answer": "green", "image": _uri(green)},
        {"id": "two", "question": "First <image> then <image>: same?", "answer": "no",
         "image": [str(tmp_path / "img" / "red.png"), {"bytes": None, "path": _uri(blue)}]},
        {"id": "text", "question": "1+1=", "answer": "2"},  # a text row in the same file
    ])
    probs = _all(load_task(_data(f), 0))
    assert probs["v:path"].question == "<image>What colour?"  # no placeholder: images go in front
    assert probs["v:two"].question == "First <image> then <image>: same?"
    assert "images" not in probs["v:text"].meta and image_kwargs([probs["v:text"]]) == {}
    (red,) = problem_images(probs["v:path"])
    assert red.mode == "RGB" and red.size == (32, 24) and red.getpixel((0, 0)) == (255, 0, 0)
    assert problem_images(probs["v:uri"])[0].getpixel((3, 3)) == (0, 255, 0)
    two = problem_images(probs["v:two"])
    assert [im.getpixel((0, 0)) for im in two] == [(255, 0, 0), (0, 0, 255)] and two[1].size == (40, 40)
    assert image_kwargs([probs["v:text"], probs["v:uri"]])["images"][0] == []


def test_parquet_bytes_and_datasets_image_objects(tmp_path):
    pa, pq = pytest.importorskip("pyarrow"), pytest.importorskip("pyarrow.parquet")
    f = tmp_path / "v.parquet"
    pq.write_table(pa.table({"question": ["a?", "b?"], "answer": ["1", "2"],
                             "picture": [{"bytes": _png(color=(1, 2, 3)), "path": "x.png"},
                                         {"bytes": _png(color=(4, 5, 6)), "path": None}]}), f)
    probs = _all(load_task(_data(f, image_field="picture"), 0))
    colours = sorted(problem_images(p)[0].getpixel((0, 0)) for p in probs.values())
    assert colours == [(1, 2, 3), (4, 5, 6)] and all("picture" not in p.meta for p in probs.values())


BAD = [  # (row's image cell or question change, the short reason counted, words the message holds)
    ({"image": "nowhere.png"}, "image file missing", "nowhere.png' does not exist"),
    ({"image": "garbage.png"}, "image unreadable", "cannot read"),
    ({"image": _uri(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)}, "image unreadable", "cannot read the 28 bytes"),
    ({"image": _uri(_png((4, 40)))}, "image too small", "4x40 pixels; each side must be at least 8"),
    ({"image": _uri(_png((300, 20)))}, "image too large", "300x20 pixels; each side must be at most 256"),
    ({"image": 7}, "bad image field", "must be an image path"),
    ({"image": "data:image/png,abc"}, "bad image field", "must be base64"),
    ({"image": _uri(_png()), "question": "<image> and <image>?"}, "image placeholders do not match the images",
     "2 '<image>' but field 'image' has 1"),
    ({"question": "see <image>", "image": None}, "image placeholders do not match the images", "no 'image' field"),
]


@pytest.mark.parametrize("cell,reason,words", BAD, ids=[b[1] + str(i) for i, b in enumerate(BAD)])
def test_a_bad_image_row_names_file_and_line(tmp_path, cell, reason, words):
    (tmp_path / "garbage.png").write_bytes(b"GIF89a but not really")
    good = {"question": "colour?", "answer": "red", "image": _uri(_png())}
    f = _write(tmp_path / "v.jsonl", [good, {**good, **cell}, good])
    with pytest.raises(DataFileError) as e:
        load_task(_data(f, image_max_side=256), 0)
    assert f"v.jsonl: line 2: " in str(e.value) and words in str(e.value) and "data.skip_bad_rows" in str(e.value)


def test_bad_image_rows_are_skipped_and_counted_per_reason(tmp_path):
    good = {"question": "colour?", "answer": "red", "image": _uri(_png())}
    rows = [good] + [{**good, **cell} for cell, _, _ in BAD if cell.get("image") != "garbage.png"] + [good]
    f = _write(tmp_path / "v.jsonl", rows)
    task = load_task(_data(f, image_max_side=256, skip_bad_rows=True), 0)
    assert task.rows == len(rows) and len(task.train) + len(task.heldout) == 2
    assert task.skip_counts() == {"image placeholders do not match the images": 2, "bad image field": 2,
                                  "image unreadable": 1, "image too small": 1, "image too large": 1,
                                  "image file missing": 1}
    assert task.skipped[0].where == f"{f}:2"


def test_image_rows_need_a_vision_model_and_null_reads_them_as_text(tmp_path):
    f = _write(tmp_path / "v.jsonl", [{"question": f"q{i}", "answer": "1", "image": _uri(_png())} for i in range(4)])
    words = [f"run.dir={tmp_path}", "data.source=file", f"data.path={f}", "data.sampler=uniform",
             "sft.enabled=false"]
    with pytest.raises(ConfigError, match=r"data.path: 4 problems of .* have images \(field 'image'"):
        prepare(load_config(words))
    _, task = prepare(load_config(words + ["data.image_field=null"]))
    assert all("images" not in p.meta and p.question.startswith("q") for p in task.train + task.heldout)
