"""Repository context through the real server: a workspace folder indexed in the background, kept
current from the editor's events, and a name defined only in another file completed."""
from __future__ import annotations

from pathlib import Path

import pytest
import pytest_lsp
from lsprotocol import types
from pytest_lsp import ClientServerConfig, LanguageClient, client_capabilities
from test_lsp import ENV, SERVER, Checkpoints, checkpoints, complete, open_doc, set_settings, status, wait_for  # noqa: F401

pytestmark = pytest.mark.asyncio(loop_scope="module")

HELPER = """def merge_parts_quarterly(items, limit, name):
    return items[:limit]


report = merge_parts_quarterly(items, limit, name)
"""
APP = "import helpers\n\n\ntotal = helpers.merge_parts_q"
NAME = "merge_parts_quarterly(items, limit, name)"  # only helpers.py knows it; the item replaces the word


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("project")
    (root / "helpers.py").write_text(HELPER)
    (root / "app.py").write_text("import helpers\n")
    (root / ".venv" / "lib").mkdir(parents=True)
    (root / ".venv" / "pyvenv.cfg").write_text("home = /usr/bin\n")
    (root / ".venv" / "lib" / "dep.py").write_text("def merge_parts_quarterly(x, y):\n    pass\n")
    (root / "other").mkdir()
    return root


@pytest_lsp.fixture(scope="module", config=ClientServerConfig(server_command=SERVER, server_env=ENV))
async def client(lsp_client: LanguageClient, checkpoints: Checkpoints, project: Path):  # noqa: F811
    lsp_client.set_configuration({"minScore": -100, "timeoutMs": 10000}, section="codecomplete")
    lsp_client.registered = []

    @lsp_client.feature(types.CLIENT_REGISTER_CAPABILITY)
    def register(params: types.RegistrationParams) -> None:
        lsp_client.registered += params.registrations

    caps = client_capabilities("visual-studio-code")  # workspace folders, watched files, progress
    folder = types.WorkspaceFolder(uri=project.as_uri(), name="project")
    await lsp_client.initialize_session(types.InitializeParams(
        capabilities=caps, root_uri=project.as_uri(), workspace_folders=[folder],
        initialization_options={"checkpoint": str(checkpoints.b), "threads": 1, "acceptanceLog": False}))
    await wait_for(lsp_client, lambda s: s["ready"] and s["workspace"] and s["workspace"][0]["index"]
                   and not s["workspace"][0]["index"]["stale"])
    yield
    await lsp_client.shutdown_session()


def index_of(s: dict) -> dict:
    return s["workspace"][0]


async def test_the_folder_is_indexed_in_the_background_without_what_it_should_skip(client: LanguageClient,
                                                                                   project: Path) -> None:
    s = await status(client)
    folder = index_of(s)
    assert folder["folder"] == str(project) and folder["files"] == 2  # helpers.py, app.py; not .venv
    assert folder["index"]["tokens"] > 0 and folder["index"]["build_s"] >= 0
    (watch,) = [r for r in client.registered if r.method == types.WORKSPACE_DID_CHANGE_WATCHED_FILES]
    assert [w["globPattern"] for w in watch.register_options["watchers"]] == ["**/*.py"]


async def test_a_name_only_another_file_defines_is_completed(client: LanguageClient, project: Path) -> None:
    """An untrained model: what it gets right, the project's n-grams gave it."""
    uri = (project / "app.py").as_uri()
    open_doc(client, APP, uri=uri)
    result = await complete(client, 3, len(APP.splitlines()[-1]), uri=uri)
    assert result.items and result.items[0].text_edit.new_text == NAME, result.items
    elsewhere = (project.parent / "elsewhere.py").as_uri()  # in no workspace folder: no context
    open_doc(client, APP, uri=elsewhere)
    outside = await complete(client, 3, len(APP.splitlines()[-1]), uri=elsewhere)
    assert NAME not in [item.text_edit.new_text for item in outside.items]
    set_settings(client, {"codecomplete": {"repoContext": False}})
    await wait_for(client, lambda s: not s["workspace"])
    without = await complete(client, 3, len(APP.splitlines()[-1]), uri=uri)
    assert NAME not in [item.text_edit.new_text for item in without.items]
    set_settings(client, {"codecomplete": {"repoContext": True}})
    await wait_for(client, lambda s: s["workspace"] and index_of(s)["files"] == 2)
    client.text_document_did_close(types.DidCloseTextDocumentParams(types.TextDocumentIdentifier(uri=uri)))


async def test_files_created_and_deleted_on_disk_and_new_folders_are_followed(client: LanguageClient,
                                                                              project: Path) -> None:
    (project / "extra.py").write_text("EXTRA = 1\n")
    client.workspace_did_change_watched_files(types.DidChangeWatchedFilesParams([
        types.FileEvent(uri=(project / "extra.py").as_uri(), type=types.FileChangeType.Created)]))
    await wait_for(client, lambda s: index_of(s)["files"] == 3)
    (project / "extra.py").unlink()
    client.workspace_did_change_watched_files(types.DidChangeWatchedFilesParams([
        types.FileEvent(uri=(project / "extra.py").as_uri(), type=types.FileChangeType.Deleted)]))
    await wait_for(client, lambda s: index_of(s)["files"] == 2)
    second = project.parent / "second"
    second.mkdir(exist_ok=True)
    (second / "mod.py").write_text("M = 1\n")
    client.workspace_did_change_workspace_folders(types.DidChangeWorkspaceFoldersParams(
        types.WorkspaceFoldersChangeEvent(added=[types.WorkspaceFolder(second.as_uri(), "second")], removed=[])))
    s = await wait_for(client, lambda s: len(s["workspace"]) == 2 and s["workspace"][1]["scanSeconds"] is not None)
    assert s["workspace"][1]["files"] == 1
    client.workspace_did_change_workspace_folders(types.DidChangeWorkspaceFoldersParams(
        types.WorkspaceFoldersChangeEvent(added=[], removed=[types.WorkspaceFolder(second.as_uri(), "second")])))
    await wait_for(client, lambda s: len(s["workspace"]) == 1)
