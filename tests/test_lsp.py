"""codecomplete-lsp end to end: the real `codecomplete-lsp` process driven by pytest-lsp.

One server for the module (spawning one costs seconds on 2 cores), serving a tiny checkpoint
trained in the session. Tests that change settings put them back.
"""
from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_lsp
from lsprotocol import types
from pygls.exceptions import JsonRpcRequestCancelled
from pytest_lsp import ClientServerConfig, LanguageClient, client_capabilities

from codecomplete.lsp.acceptance import acceptance_rate

pytestmark = pytest.mark.asyncio(loop_scope="module")

BIN = Path(sys.executable).parent
SERVER = [str(BIN / "codecomplete-lsp")] if (BIN / "codecomplete-lsp").exists() else [sys.executable, "-m", "codecomplete.lsp"]
ENV = {k: v for k, v in os.environ.items() if k != "CODECOMPLETE_CHECKPOINT"} | {"OMP_NUM_THREADS": "1"}
URI = "file:///project/pkg/sample.py"


@dataclass(frozen=True)
class Checkpoints:
    a: Path  # trained for a few steps on synthetic modules: writes Python-looking lines
    b: Path  # same tokenizer, untrained: a different model for hot swaps
    corrupt: Path  # a's files with the weights cut short


def build_checkpoints(root: Path) -> Checkpoints:
    """Built once a session (the Neovim test shares it): ~2 s on 2 cores."""
    out = Checkpoints(root / "a", root / "b", root / "corrupt")
    if (root / "done").exists():
        return out
    import torch
    from conftest import synthetic_module

    from codecomplete.engine.checkpoint import save_checkpoint
    from codecomplete.engine.model import GPT, config_from_preset
    from codecomplete.train.tokenizer_train import train_tokenizer

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    texts = [synthetic_module(random.Random(i)) for i in range(24)]
    tok = train_tokenizer(texts, 400)
    ids = [tok.eot_id]
    for t in texts:
        ids += tok.encode(t) + [tok.eot_id]
    data, gen = torch.tensor(ids), torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = GPT(config_from_preset("tiny", tok.vocab_size))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(60):
        starts = torch.randint(len(data) - 129, (8,), generator=gen)
        x = torch.stack([data[i : i + 129] for i in starts])
        _, loss = model(x[:, :-1], x[:, 1:])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    provenance = {"fim_rate": 0.0}  # trained left to right: the engine must not build FIM prompts
    save_checkpoint(out.a, model.eval(), tok, provenance)
    torch.manual_seed(1)
    save_checkpoint(out.b, GPT(config_from_preset("tiny", tok.vocab_size)).eval(), tok, provenance)
    shutil.copytree(out.a, out.corrupt)
    weights = out.corrupt / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    torch.set_num_threads(threads)
    (root / "done").touch()
    return out


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> Checkpoints:
    return build_checkpoints(tmp_path_factory.getbasetemp() / "lsp-checkpoints")


@pytest.fixture(scope="module")
def acceptance_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("state") / "acceptance.jsonl"


# What the editor's settings hold: answered to workspace/configuration, over initializationOptions.
WORKSPACE = {"numSuggestions": 3, "minScore": -100, "timeoutMs": 10000}


def init_options(checkpoint: Path, log: Path) -> dict[str, Any]:
    # flat, as DESIGN.md has it; numSuggestions is overridden by the workspace settings above
    return {"checkpoint": str(checkpoint), "numSuggestions": 2, "threads": 1, "acceptanceLogPath": str(log)}


@pytest_lsp.fixture(scope="module", config=ClientServerConfig(server_command=SERVER, server_env=ENV))
async def client(lsp_client: LanguageClient, checkpoints: Checkpoints, acceptance_file: Path):
    lsp_client.set_configuration(dict(WORKSPACE), section="codecomplete")
    caps = client_capabilities("visual-studio-code")  # UTF-16 positions, progress, configuration
    caps.text_document.inline_completion = types.InlineCompletionClientCapabilities()  # not in the recording
    result = await lsp_client.initialize_session(types.InitializeParams(
        capabilities=caps, initialization_options=init_options(checkpoints.a, acceptance_file)))
    lsp_client.init_result = result
    await wait_for(lsp_client, lambda s: s["ready"])
    yield
    await lsp_client.shutdown_session()


async def status(client: LanguageClient) -> dict[str, Any]:
    return await client.workspace_execute_command_async(types.ExecuteCommandParams(command="codecomplete.status"))


async def wait_for(client: LanguageClient, ok: Callable[[dict[str, Any]], Any], timeout: float = 60) -> dict[str, Any]:
    end = time.monotonic() + timeout
    while True:
        s = await status(client)
        if ok(s):
            return s
        assert time.monotonic() < end, f"timed out; last status: {json.dumps(s)[:800]}"
        await asyncio.sleep(0.05)


def open_doc(client: LanguageClient, text: str, uri: str = URI, version: int = 1) -> None:
    client.text_document_did_open(types.DidOpenTextDocumentParams(
        types.TextDocumentItem(uri=uri, language_id="python", version=version, text=text)))


def set_settings(client: LanguageClient, settings: Any) -> None:
    client.workspace_did_change_configuration(types.DidChangeConfigurationParams(settings=settings))


async def complete(client: LanguageClient, line: int, character: int, uri: str = URI) -> types.CompletionList:
    return await client.text_document_completion_async(types.CompletionParams(
        text_document=types.TextDocumentIdentifier(uri), position=types.Position(line, character)))


async def inline(client: LanguageClient, line: int, character: int, kind: types.InlineCompletionTriggerKind,
                 selected: types.SelectedCompletionInfo | None = None, uri: str = URI) -> types.InlineCompletionList:
    return await client.text_document_inline_completion_async(types.InlineCompletionParams(
        text_document=types.TextDocumentIdentifier(uri), position=types.Position(line, character),
        context=types.InlineCompletionContext(trigger_kind=kind, selected_completion_info=selected)))


# A file like the training data; the cursor goes after "ra" in "    for i in range(...)".
SAMPLE = (
    '"""Helpers for a synthetic module."""\nimport json\nimport os\n\n\n'
    "def parse_line_7(path, items=None):\n"
    '    """Return the path for items."""\n'
    "    items = items or {}\n"
    "    for i in range(3):\n"
    "        if path == 12:\n"
)
LINE, COL = 8, len("    for i in ra")


async def test_initialize_advertises_what_editors_need(client: LanguageClient) -> None:
    caps = client.init_result.capabilities
    assert caps.completion_provider is not None and "." in caps.completion_provider.trigger_characters
    assert caps.inline_completion_provider is not None  # without it no editor asks for ghost text
    assert caps.text_document_sync.change == types.TextDocumentSyncKind.Incremental
    assert caps.position_encoding == "utf-16"
    assert {"codecomplete.status", "codecomplete.reload", "codecomplete.accepted"} <= set(caps.execute_command_provider.commands)


async def test_model_loaded_with_progress(client: LanguageClient, checkpoints: Checkpoints) -> None:
    s = await status(client)
    assert s["model"]["checkpoint"] == str(checkpoints.a) and s["model"]["device"] == "cpu"
    assert s["model"]["params"] > 0 and s["error"] is None
    kinds = [[type(v).__name__ for v in values] for values in client.progress_reports.values()]
    assert ["WorkDoneProgressBegin", "WorkDoneProgressEnd"] in kinds


async def test_settings_layer_init_options_under_workspace_configuration(client: LanguageClient) -> None:
    s = (await status(client))["settings"]
    assert s["numSuggestions"] == 3  # the workspace/configuration pull wins over initializationOptions
    assert s["threads"] == 1 and s["minScore"] == -100  # from one source each


async def test_completion_items(client: LanguageClient) -> None:
    open_doc(client, SAMPLE)
    result = await complete(client, LINE, COL)
    assert result.is_incomplete  # so that clients ask again as the user types
    assert 1 <= len(result.items) <= 3
    assert [i.sort_text for i in result.items] == [f"{r:04d}" for r in range(len(result.items))]
    scores = [float(i.detail.rsplit(" ", 1)[1]) for i in result.items]
    assert scores == sorted(scores, reverse=True)
    for item in result.items:
        edit = item.text_edit
        assert edit.range == types.Range(types.Position(LINE, COL - 2), types.Position(LINE, COL))  # replaces "ra"
        assert edit.new_text.startswith("ra") and len(edit.new_text) > 2
        assert item.label == edit.new_text.split("\n")[0] or item.label.endswith("…")
        assert item.insert_text_format == types.InsertTextFormat.PlainText
        assert item.command.command == "codecomplete.accepted"


async def test_inline_completion_automatic_gives_one_invoked_several(client: LanguageClient) -> None:
    open_doc(client, SAMPLE)
    auto = await inline(client, LINE, COL, types.InlineCompletionTriggerKind.Automatic)
    invoked = await inline(client, LINE, COL, types.InlineCompletionTriggerKind.Invoked)
    assert len(auto.items) == 1
    assert 2 <= len(invoked.items) <= 3
    assert auto.items[0].insert_text == invoked.items[0].insert_text  # the best one first either way
    for item in invoked.items:
        assert item.range.start.line == item.range.end.line == LINE  # one line, as the spec requires
        assert item.range.end.character == COL and item.insert_text.startswith("ra")
        assert item.command.arguments[0]["kind"] == "inline"


async def test_inline_completion_extends_the_selected_menu_item(client: LanguageClient) -> None:
    open_doc(client, SAMPLE)
    span = types.Range(types.Position(LINE, COL - 2), types.Position(LINE, COL))
    selected = types.SelectedCompletionInfo(range=span, text="range")
    result = await inline(client, LINE, COL, types.InlineCompletionTriggerKind.Invoked, selected)
    assert result.items
    for item in result.items:
        assert item.range == span and item.insert_text.startswith("range") and len(item.insert_text) > 5


async def test_utf16_positions_with_emoji_and_cjk(client: LanguageClient) -> None:
    uri = "file:///project/pkg/unicode.py"
    line = '    label = "😀 漢字" + pa'  # the emoji is 2 UTF-16 units, each CJK character 1
    text = SAMPLE + line
    open_doc(client, text, uri)
    row, col = SAMPLE.count("\n"), len(line.encode("utf-16-le")) // 2
    assert col == len(line) + 1
    result = await complete(client, row, col, uri)
    assert result.items
    for item in result.items:
        assert item.text_edit.range.start == types.Position(row, col - 2)  # "pa", in UTF-16 units
        assert item.text_edit.range.end == types.Position(row, col)
        assert item.text_edit.new_text.startswith("pa")
    # Type "th" after "pa" (UTF-16 columns), then ask in the middle of the emoji: no crash, rounded down.
    client.text_document_did_change(types.DidChangeTextDocumentParams(
        text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=2),
        content_changes=[types.TextDocumentContentChangePartial(
            range=types.Range(types.Position(row, col), types.Position(row, col)), text="th")]))
    s = await status(client)
    assert s["documents"][uri] == {"version": 2, "lines": row + 1, "chars": len(text) + 2}
    result = await complete(client, row, col + 2, uri)
    assert all(i.text_edit.new_text.startswith("path") for i in result.items)
    emoji_middle = line.index("😀") + 1  # between the two surrogates
    result = await inline(client, row, emoji_middle, types.InlineCompletionTriggerKind.Invoked, uri=uri)
    assert all(i.range.end.character == emoji_middle - 1 for i in result.items)


async def test_did_change_configuration_push_and_empty_push(client: LanguageClient) -> None:
    open_doc(client, SAMPLE)
    set_settings(client, {"codecomplete": {"numSuggestions": 1}})
    await wait_for(client, lambda s: s["settings"]["numSuggestions"] == 1)
    assert len((await inline(client, LINE, COL, types.InlineCompletionTriggerKind.Invoked)).items) == 1
    set_settings(client, None)  # "settings changed, ask me": the server pulls workspace/configuration
    await wait_for(client, lambda s: s["settings"]["numSuggestions"] == 3)


async def test_unknown_key_and_wrong_type_warn_and_keep_values(client: LanguageClient) -> None:
    before = len(client.messages)
    set_settings(client, {"codecomplete": {**WORKSPACE, "noSuchKey": 1, "temperature": "hot"}})
    await wait_for(client, lambda s: len(client.messages) > before)
    warning = client.messages[before]
    assert warning.type == types.MessageType.Warning
    assert "codecomplete.noSuchKey" in warning.message and "codecomplete.temperature" in warning.message
    s = await status(client)
    assert s["ready"] and s["settings"]["temperature"] == 0.0
    set_settings(client, {"codecomplete": WORKSPACE})


async def test_unopened_document_and_out_of_range_positions(client: LanguageClient) -> None:
    assert (await complete(client, 0, 0, "file:///nowhere.py")).items == ()
    assert (await inline(client, 0, 0, types.InlineCompletionTriggerKind.Invoked, uri="file:///nowhere.py")).items == ()
    open_doc(client, SAMPLE)
    end = types.Position(SAMPLE.count("\n"), 0)  # clamped to the end of the document
    for item in (await complete(client, 10_000, 10_000)).items:
        assert item.text_edit.range.end == end
    for item in (await complete(client, LINE, 10_000)).items:  # past the end of the line
        assert item.text_edit.range.end == types.Position(LINE, len("    for i in range(3):"))
    # (a negative line, which no typed client can send, is in test_lsp_wire.py)


async def test_cancel_request_and_supersede(client: LanguageClient) -> None:
    open_doc(client, SAMPLE)
    params = types.InlineCompletionParams(
        text_document=types.TextDocumentIdentifier(URI), position=types.Position(LINE, COL),
        context=types.InlineCompletionContext(types.InlineCompletionTriggerKind.Invoked))
    request = asyncio.ensure_future(client.protocol.send_request_async(
        types.TEXT_DOCUMENT_INLINE_COMPLETION, params, msg_id="to-cancel"))
    await asyncio.sleep(0)  # the request is on the wire
    client.cancel_request(types.CancelParams(id="to-cancel"))
    with pytest.raises(JsonRpcRequestCancelled):
        await request
    # Neovim does not cancel what it no longer wants: a newer request for the document does.
    older, newer = await asyncio.gather(*(
        client.text_document_inline_completion_async(params) for _ in range(2)))
    assert len(older.items) in (0, len(newer.items)) and newer.items  # superseded, or it finished first
    assert (await complete(client, LINE, COL)).items  # and it serves on


async def test_burst_of_changes_and_cancellations(client: LanguageClient) -> None:
    uri = "file:///project/pkg/typed.py"
    open_doc(client, SAMPLE, uri)
    typed, row = "    return items[i] + path\n", SAMPLE.count("\n")
    futures = []
    for k, ch in enumerate(typed * 10):  # 270 keystrokes, each followed by a request
        pos = types.Position(row + (typed * 10)[:k].count("\n"), len((typed * 10)[:k].rsplit("\n", 1)[-1]))
        client.text_document_did_change(types.DidChangeTextDocumentParams(
            text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=k + 2),
            content_changes=[types.TextDocumentContentChangePartial(range=types.Range(pos, pos), text=ch)]))
        futures.append(asyncio.ensure_future(client.protocol.send_request_async(
            types.TEXT_DOCUMENT_COMPLETION, types.CompletionParams(types.TextDocumentIdentifier(uri), pos), msg_id=f"burst-{k}")))
        if k % 3:
            client.cancel_request(types.CancelParams(id=f"burst-{k}"))
    results = await asyncio.gather(*futures, return_exceptions=True)
    assert all(isinstance(r, (types.CompletionList, JsonRpcRequestCancelled)) for r in results)
    s = await status(client)
    assert s["documents"][uri] == {"version": len(typed) * 10 + 1, "lines": row + 11, "chars": len(SAMPLE) + len(typed) * 10}


async def test_five_megabyte_file(client: LanguageClient) -> None:
    uri = "file:///project/pkg/huge.py"
    big = SAMPLE * (5_000_000 // len(SAMPLE))
    open_doc(client, big, uri)
    rows, per = big.count("\n"), SAMPLE.count("\n")
    for row in (rows // 2 // per * per + LINE, rows - per + LINE):  # in the middle, and near the end
        result = await complete(client, row, COL, uri)
        assert result.items and all(i.text_edit.range.start == types.Position(row, COL - 2) for i in result.items)
    client.text_document_did_change(types.DidChangeTextDocumentParams(
        text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=2),
        content_changes=[types.TextDocumentContentChangePartial(
            range=types.Range(types.Position(0, 0), types.Position(rows // 2, 0)), text="")]))
    s = await status(client)
    assert s["documents"][uri]["chars"] == len(big.split("\n", rows // 2)[-1])
    client.text_document_did_close(types.DidCloseTextDocumentParams(types.TextDocumentIdentifier(uri)))


async def test_accepted_command_writes_the_acceptance_log(client: LanguageClient, acceptance_file: Path) -> None:
    open_doc(client, SAMPLE)
    item = (await inline(client, LINE, COL, types.InlineCompletionTriggerKind.Automatic)).items[0]
    await client.workspace_execute_command_async(types.ExecuteCommandParams(
        command=item.command.command, arguments=item.command.arguments))  # what the editor does on accept
    records = [json.loads(line) for line in acceptance_file.read_text().splitlines()]
    (accepted,) = [r for r in records if r["event"] == "accepted"]
    assert accepted["id"] == item.command.arguments[0]["id"] and accepted["kind"] == "inline"
    shown = next(r for r in records if r["event"] == "shown" and r["id"] == accepted["id"])
    assert shown["items"] == 1 and shown["language"] == "python" and "text" not in shown  # no code in the log
    rate = acceptance_rate(acceptance_file)
    assert rate["accepted"] == 1 and 0 < rate["rate"] <= 1 and rate["by_kind"]["inline"]["accepted"] == 1


async def test_hot_swap_and_bad_checkpoint_keeps_the_old_model(client: LanguageClient, checkpoints: Checkpoints) -> None:
    open_doc(client, SAMPLE)
    tokens = len(client.progress_reports)
    set_settings(client, {"codecomplete": {**WORKSPACE, "checkpoint": str(checkpoints.b)}})
    assert isinstance(await complete(client, LINE, COL), types.CompletionList)  # serving during the load
    s = await wait_for(client, lambda s: s["model"]["checkpoint"] == str(checkpoints.b) and not s["loading"])
    assert s["error"] is None and len(client.progress_reports) == tokens + 1

    for bad in (checkpoints.corrupt, checkpoints.corrupt.parent / "missing"):
        errors = len([m for m in client.messages if m.type == types.MessageType.Error])
        set_settings(client, {"codecomplete": {**WORKSPACE, "checkpoint": str(bad)}})
        s = await wait_for(client, lambda s, bad=bad: s["error"] and str(bad) in s["error"] and not s["loading"])
        assert s["model"]["checkpoint"] == str(checkpoints.b)  # the old model keeps serving
        assert (await complete(client, LINE, COL)).items
        new = [m for m in client.messages if m.type == types.MessageType.Error][errors:]
        assert len(new) == 1 and str(bad) in new[0].message and "still serving" in new[0].message

    set_settings(client, {"codecomplete": {**WORKSPACE, "checkpoint": str(checkpoints.a)}})
    s = await wait_for(client, lambda s: s["model"]["checkpoint"] == str(checkpoints.a) and not s["loading"])
    assert s["error"] is None


async def test_reload_command_and_latencies_in_status(client: LanguageClient, checkpoints: Checkpoints) -> None:
    s = await client.workspace_execute_command_async(types.ExecuteCommandParams(command="codecomplete.reload"))
    assert s["ready"] and s["model"]["checkpoint"] == str(checkpoints.a) and s["loading"] is None
    assert all(r["serverMs"] >= r["latency_ms"] >= 0 for r in s["latencies"])
    assert any(r["prompt_tokens"] > 0 for r in s["latencies"])


async def test_copy_index_setting_loads_or_warns(client: LanguageClient, tmp_path: Path) -> None:
    from codecomplete.engine.copy_index import CopyIndex

    CopyIndex([], []).save(tmp_path / "copy_index.npz")
    before = len(client.messages)
    set_settings(client, {"codecomplete": {**WORKSPACE, "copyIndex": str(tmp_path / "missing")}})
    await wait_for(client, lambda s: len(client.messages) > before)
    assert "codecomplete.copyIndex" in client.messages[before].message and "not filtered" in client.messages[before].message
    set_settings(client, {"codecomplete": {**WORKSPACE, "copyIndex": str(tmp_path)}})
    await wait_for(client, lambda s: s["settings"]["copyIndex"] == str(tmp_path))
    assert len(client.messages) == before + 1  # a good index loads quietly
    open_doc(client, SAMPLE)
    await complete(client, LINE, COL)  # completions still answer with the filter on
    set_settings(client, {"codecomplete": WORKSPACE})
