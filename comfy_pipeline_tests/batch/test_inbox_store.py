"""The inbox's rules hold on both stores alike (a local folder and a real S3 API server on loopback): settled
objects only, one level only (never `rejected/`), the image beside a prompt, the cursor, size limits checked
before reading, a bad object moved aside with its reason, and a listing in pages."""

import time
from pathlib import Path

import pytest

from comfy_pipeline.batch import inbox
from comfy_pipeline.storage import StoreError, open_store
from comfy_pipeline.storage.s3 import S3Store
from comfy_pipeline.workflows.prompts import MAX_PROMPT_FILE_BYTES, PromptError


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path: Path):
    if request.param == "local":
        return open_store(str(tmp_path / "out"))
    server = request.getfixturevalue("s3_env")
    return open_store(f"s3://{server.new_bucket()}/out")


@pytest.fixture
def s3_calls(monkeypatch) -> list[tuple[str, str | None]]:
    """Every S3 request the stores of this test make: (operation, key)."""
    calls, counted = [], set()
    real = S3Store.client

    def client(self):
        made = real.fget(self)
        if id(made) not in counted:
            counted.add(id(made))
            made.meta.events.register(
                "before-parameter-build.s3", lambda model, params, **_: calls.append((model.name, params.get("Key"))))
        return made

    monkeypatch.setattr(S3Store, "client", property(client))
    return calls


def names(objects) -> list[str]:
    return [d.name for d in objects]


def test_settled_prompts_are_ready_and_fresh_ones_wait(store):
    store.put_bytes("inbox/fox.txt", b"a red fox")
    store.put_bytes("inbox/notes.md", b"not a prompt")
    found = inbox.scan(store, {}, settle=3600)
    assert found.ready == [] and found.waiting == ["fox.txt"]
    found = inbox.scan(store, {}, settle=3600, now=time.time() + 7200)
    assert names(found.ready) == ["fox.txt"] and found.waiting == [] and found.cursor == {}


def test_the_cursor_skips_what_was_handled_and_takes_an_edited_object_again(store):
    store.put_bytes("inbox/a.txt", b"one")
    store.put_bytes("inbox/b.json", b'{"text": "two"}')
    found = inbox.scan(store, {}, settle=0)
    assert names(found.ready) == ["a.txt", "b.json"]
    for dropped in found.ready:
        inbox.mark_handled(found, dropped)
    cursor = inbox.load_cursor(inbox.dump_cursor(found))
    again = inbox.scan(store, cursor, settle=0)
    assert again.ready == [] and set(again.cursor) == {"a.txt", "b.json"}
    store.put_bytes("inbox/a.txt", b"one, edited", replace=True)
    store.delete("inbox/b.json")
    edited = inbox.scan(store, cursor, settle=0)
    assert names(edited.ready) == ["a.txt"] and edited.cursor == {}  # b.json is gone from the cursor too


def test_a_cursor_of_the_old_format_still_counts_on_disk(tmp_path):
    store = open_store(str(tmp_path / "out"))
    store.put_bytes("inbox/fox.txt", b"a fox")
    info = (tmp_path / "out" / "inbox" / "fox.txt").stat()
    found = inbox.scan(store, {"fox.txt": [info.st_size, info.st_mtime_ns]}, settle=0)
    assert found.ready == [] and list(found.cursor) == ["fox.txt"]
    assert inbox.load_cursor("not json") == {} and inbox.load_cursor("[1, 2]") == {}


def test_only_the_inbox_itself_is_listed_never_rejected_or_subfolders(store, s3_calls):
    store.put_bytes("inbox/rejected/old.txt", b"a bad one set aside")
    store.put_bytes("inbox/rejected/old.txt.reason.txt", b"why")
    store.put_bytes("inbox/sub/deep.txt", b"not ours")
    store.put_bytes("inbox/.fox.txt.part", b"a writer's temp file")
    store.put_bytes("inbox/fox.txt", b"a fox")
    s3_calls.clear()
    found = inbox.scan(store, {}, settle=0)
    assert names(found.ready) == ["fox.txt"]
    assert all(op == "ListObjectsV2" for op, _ in s3_calls)


def test_the_image_beside_a_prompt_goes_with_it_and_makes_it_wait_while_it_changes(store):
    store.put_bytes("inbox/scene.txt", b"slow pan")
    store.put_bytes("inbox/other.png", b"an image alone is not a prompt")
    prompt_time = store.stat("inbox/scene.txt").modified
    store.put_bytes("inbox/scene.PNG", b"png bytes")
    while (image_time := store.stat("inbox/scene.PNG").modified) < prompt_time + 1:  # a clearly later image
        store.put_bytes("inbox/scene.PNG", b"png bytes", replace=True)
    (dropped,) = inbox.scan(store, {}, settle=0).ready
    assert dropped.image.key == "inbox/scene.PNG"
    # The prompt has settled, the image beside it not yet: the prompt waits for it.
    found = inbox.scan(store, {}, settle=1, now=image_time + 0.5)
    assert found.ready == [] and found.waiting == ["scene.txt"]
    assert names(inbox.scan(store, {}, settle=1, now=image_time + 1.5).ready) == ["scene.txt"]


def test_a_prompt_above_the_limit_is_refused_without_being_read(store, s3_calls):
    store.put_bytes("inbox/huge.txt", b"a" * (MAX_PROMPT_FILE_BYTES + 1))
    (dropped,) = inbox.scan(store, {}, settle=0).ready
    s3_calls.clear()
    with pytest.raises(PromptError, match=r"huge.txt: 1,000,001 bytes is too big for a prompt file"):
        inbox.read_prompt(store, dropped)
    assert s3_calls == []


def test_a_bad_object_and_its_image_are_moved_aside_with_the_reason(store):
    for _ in range(2):  # the same name rejected twice within a second: nothing is replaced
        store.put_bytes("inbox/scene.txt", b"slow pan", replace=True)
        store.put_bytes("inbox/scene.png", b"not an image", replace=True)
        (dropped,) = inbox.scan(store, {}, settle=0).ready
        moved = inbox.reject(store, dropped, "scene.txt: the image beside it cannot be used")
        assert store.get_bytes(f"{moved}.reason.txt") == b"scene.txt: the image beside it cannot be used\n"
    keys = [o.key for o in store.objects("inbox")]
    assert not [k for k in keys if not k.startswith("inbox/rejected/")]
    assert len([k for k in keys if k.endswith("_scene.txt")]) == 2
    assert len([k for k in keys if k.endswith("_scene.png")]) == 2
    assert len([k for k in keys if k.endswith("_scene.txt.reason.txt")]) == 2
    assert inbox.scan(store, {}, settle=0).ready == []


def test_the_listing_comes_in_pages(tmp_path, s3_env, s3_calls):
    store = open_store(f"s3://{s3_env.new_bucket()}/out")
    for i in range(7):
        store.put_bytes(f"inbox/p{i}.txt", b"x")
    s3_calls.clear()
    found = inbox.scan(store, {}, settle=0, page_size=3)
    assert len(found.ready) == 7
    assert [op for op, _ in s3_calls] == ["ListObjectsV2"] * 3


def test_a_file_where_the_local_inbox_should_be_is_a_clear_error(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "inbox").write_text("oops")
    with pytest.raises(StoreError, match="is not a folder"):
        inbox.prepare(open_store(str(tmp_path / "out")))
    inbox.prepare(open_store(str(tmp_path / "fresh")))
    assert (tmp_path / "fresh" / "inbox").is_dir()
