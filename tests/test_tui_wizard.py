"""The new-session wizard driven by keys (Textual Pilot): focus, labels, numbers read as
typed, every problem beside its field, each role's endpoint (model, api_base, the key
variable's name) with its test button, the estimates, and a wizard session against the
fake OpenAI-compatible server that runs its root."""
import asyncio
import socket

import pytest
from textual.widgets import Static

from conftest import FAKE_KEY
from test_tui import open_workbench, stored, wait_for
from test_tui_hostile import plain, screenshot_text
from promptarbor.tui.app import PromptArborApp
from promptarbor.tui.screens.wizard import NewSessionScreen, looks_like_key, short_error

SMALL, LARGE = (80, 24), (160, 45)


async def open_wizard(pilot) -> NewSessionScreen:
    await pilot.pause(0.2)
    await pilot.press("n")
    await wait_for(pilot, lambda: isinstance(pilot.app.screen, NewSessionScreen))
    await pilot.pause(0.2)
    return pilot.app.screen


def text_of(screen, selector: str) -> str:
    return plain(screen.query_one(selector).content)


async def settle(pilot, screen) -> None:
    """Let the wizard check again (it waits for typing to pause)."""
    await pilot.pause(0.25)
    screen.update_plan()
    await pilot.pause(0.05)


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


def small_drpo(screen, seed_file) -> None:
    """The DRPO search at its smallest (a root and one level), on a two-query seed file."""
    for key, value in (("beam_width", "1"), ("samples_per_state", "1"), ("depth", "1"),
                       ("icl_k", "0")):
        screen.query_one(f"#num-drpo-{key}").value = value
    screen.query_one("#icl-opt").value = True
    screen.query_one("#data-drpo-seed").value = str(seed_file)


@pytest.fixture
def seed_file(tmp_path):
    path = tmp_path / "q.jsonl"
    path.write_text('{"query": "How do tides work?"}\n{"query": "Plan a picnic."}\n')
    return path


@pytest.mark.parametrize("size", [SMALL, LARGE])
def test_first_field_is_focused_and_labels_stay_visible(tmp_path, size):
    async def scenario():
        app = PromptArborApp(tmp_path / "store")
        async with app.run_test(size=size) as pilot:
            wizard = await open_wizard(pilot)
            assert app.focused is wizard.query_one("#name")
            await pilot.press(*"tides")  # typing is not lost
            assert wizard.query_one("#name").value == "tides"
            shown = screenshot_text(app)
            # every role and every column is named on screen, not by a placeholder
            for word in ("name", "method", "role", "model", "api_base", "api_key_env",
                         "all roles", "base", "optimizer", "evaluator", "judge"):
                assert word in shown, word
            # the plan and the buttons are in view even at 80×24
            assert "Planned calls:" in shown and "Create (ctrl+s)" in shown
            assert "Cancel (esc)" in shown
            # a number's label stays when its field is emptied
            wizard.query_one("#num-drpo-depth").value = ""
            wizard.query_one("#num-drpo-depth").focus()
            await settle(pilot, wizard)
            assert "D depth" in screenshot_text(app)
    asyncio.run(scenario())


def test_2_5_in_a_whole_number_field_is_an_error_not_25(tmp_path):
    async def scenario():
        app = PromptArborApp(tmp_path / "store")
        async with app.run_test(size=SMALL) as pilot:
            wizard = await open_wizard(pilot)
            field = wizard.query_one("#num-drpo-beam_width")
            field.focus()
            field.value = ""
            await pilot.press("2", "full_stop", "5")
            assert field.value == "2.5"  # as typed, not "25"
            await settle(pilot, wizard)
            assert "must be a whole number, got 2.5" in text_of(wizard, "#err-num-drpo-beam_width")
            assert "search.beam_width must be a whole number" in text_of(wizard, "#plan")
            assert "-invalid" in field.classes
            await pilot.press("ctrl+s")  # refused: the wizard stays, nothing is created
            await pilot.pause(0.3)
            assert isinstance(app.screen, NewSessionScreen)
            assert app.focused is field
            assert app.store.list() == []
            # w exploration is a number: 2.5 is fine there
            wizard.query_one("#method").value = "vapo"
            await settle(pilot, wizard)
            assert wizard.query_one("#num-vapo-exploration").value == "2.5"
            assert text_of(wizard, "#err-num-vapo-exploration") == ""
    asyncio.run(scenario())


def test_every_problem_is_listed_beside_its_field(tmp_path):
    async def scenario():
        app = PromptArborApp(tmp_path / "store")
        async with app.run_test(size=LARGE) as pilot:
            wizard = await open_wizard(pilot)
            wizard.query_one("#num-drpo-beam_width").value = "0"
            wizard.query_one("#num-drpo-depth").value = "deep"
            wizard.query_one("#num-drpo-icl_k").value = ""
            wizard.query_one("#data-drpo-seed").value = str(tmp_path / "missing.jsonl")
            wizard.query_one("#model-base").value = "openai/fake-base"
            wizard.query_one("#api-base-base").value = "localhost:8000/v1"
            wizard.query_one("#key-env-base").value = FAKE_KEY  # the key, not its name
            wizard.query_one("#api-base-judge").value = "http://127.0.0.1:9/v1"  # no model
            await settle(pilot, wizard)
            beside = {
                "#err-num-drpo-beam_width": "must be at least 1, got 0",
                "#err-num-drpo-depth": "must be a whole number, got 'deep'",
                "#err-num-drpo-icl_k": "give a number",
                "#err-data-drpo-seed": "file not found",
                "#err-api-base-base": "must start with http:// or https://",
                "#err-key-env-base": "looks like a key",
                "#err-model-judge": "needs a model",
            }
            for selector, expected in beside.items():
                assert expected in text_of(wizard, selector), selector
                assert wizard.query_one(selector).display
            summary = text_of(wizard, "#plan")
            assert f"{len(beside)} problems" in summary
            assert len(wizard.problems) == len(beside)
            # the key typed by mistake is in its field only: no message repeats it
            notes = [plain(w.content) for w in wizard.query(Static)] + wizard.problems
            assert not [n for n in notes if FAKE_KEY in n]
            # fields without a problem show none
            assert text_of(wizard, "#err-num-drpo-samples_per_state") == ""
            assert not wizard.query_one("#errs-optimizer").display
            # fixing them clears them, one by one
            wizard.query_one("#num-drpo-beam_width").value = "1"
            await settle(pilot, wizard)
            assert text_of(wizard, "#err-num-drpo-beam_width") == ""
            assert len(wizard.problems) == len(beside) - 1
    asyncio.run(scenario())


def test_a_key_variable_that_is_not_set_is_pointed_out(tmp_path, monkeypatch):
    monkeypatch.delenv("PA_NOT_SET_ANYWHERE", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)

    async def scenario():
        app = PromptArborApp(tmp_path / "store")
        async with app.run_test(size=LARGE) as pilot:
            wizard = await open_wizard(pilot)
            wizard.query_one("#model-default").value = "openai/fake-any"
            await settle(pilot, wizard)
            # an openai/ model with no key variable: the run would fail on credentials
            assert "needs a key variable" in text_of(wizard, "#err-key-env-default")
            wizard.query_one("#key-env-default").value = "PA_NOT_SET_ANYWHERE"
            await settle(pilot, wizard)
            assert "not set" in text_of(wizard, "#err-key-env-default")
            assert not wizard.problems  # a note, not a problem: the session can be created
    asyncio.run(scenario())


def test_endpoint_and_key_variable_name_end_up_in_the_config_and_no_key(
        tmp_path, fake_server, fake_key, seed_file):
    async def scenario():
        app = PromptArborApp(tmp_path / "store")
        async with app.run_test(size=SMALL) as pilot:
            wizard = await open_wizard(pilot)
            wizard.query_one("#name").value = "endpoints"
            wizard.query_one("#model-default").value = "openai/fake-any"
            wizard.query_one("#api-base-default").value = fake_server.base_url
            wizard.query_one("#key-env-default").value = "PA_FAKE_KEY"
            wizard.query_one("#model-judge").value = "openai/fake-judge"
            wizard.query_one("#api-base-judge").value = fake_server.base_url
            wizard.query_one("#key-env-judge").value = "PA_FAKE_KEY"
            small_drpo(wizard, seed_file)
            await settle(pilot, wizard)
            assert not wizard.problems, wizard.problems
            await pilot.press("ctrl+s")
            screen = await open_workbench(pilot)
            session_id = screen.session_id
        session = stored(tmp_path, session_id)
        models = session["config"]["models"]
        for role in ("base", "optimizer", "evaluator"):
            assert models[role]["model"] == "openai/fake-any"
            assert models[role]["api_base"] == fake_server.base_url
            assert models[role]["api_key_env"] == "PA_FAKE_KEY"
        assert models["judge"]["model"] == "openai/fake-judge"
        assert models["judge"]["api_key_env"] == "PA_FAKE_KEY"
        # the key's value is nowhere in the store
        for path in (tmp_path / "store").rglob("*"):
            if path.is_file():
                assert FAKE_KEY.encode() not in path.read_bytes(), path
    asyncio.run(scenario())


def test_test_button_shows_one_line_ok_or_error(tmp_path, fake_server, fake_key):
    async def scenario():
        app = PromptArborApp(tmp_path / "store")
        async with app.run_test(size=SMALL) as pilot:
            wizard = await open_wizard(pilot)
            wizard.query_one("#model-base").value = "openai/fake-base"
            wizard.query_one("#api-base-base").value = fake_server.base_url
            wizard.query_one("#key-env-base").value = "PA_FAKE_KEY"
            await settle(pilot, wizard)
            assert "Time: press test" in text_of(wizard, "#plan")
            button = wizard.query_one("#test-base")
            button.focus()
            await pilot.press("enter")
            result = wizard.query_one("#result-base")
            await wait_for(pilot, lambda: "ok ·" in text_of(wizard, "#result-base"))
            line = text_of(wizard, "#result-base")
            assert line.startswith("✓ ok · ") and line.endswith(" ms · fake-base"), line
            assert "\n" not in line and result.size.height == 1
            # the measured latency gives the time estimate (the other roles not measured)
            await wait_for(pilot, lambda: "Time ≥" in text_of(wizard, "#plan"))
            assert "not measured: optimizer, evaluator, judge" in text_of(wizard, "#plan")
            assert fake_server.requests[-1]["params"]["max_tokens"] <= 16

            # a provider error that echoes the key: one line, the key redacted
            fake_server.inject("401-echo")
            wizard.test_role("base")
            await wait_for(pilot, lambda: text_of(wizard, "#result-base").startswith("✗"))
            line = text_of(wizard, "#result-base")
            assert "\n" not in line and FAKE_KEY not in line and "HTTP 401" in line, line
            assert FAKE_KEY not in plain(result.tooltip)

            # nothing listens on the port: an error line, at once (no retries)
            wizard.query_one("#api-base-base").value = closed_port_url()
            await settle(pilot, wizard)
            wizard.test_role("base")
            await wait_for(pilot, lambda: text_of(wizard, "#result-base").startswith("✗ ")
                           and "HTTP 401" not in text_of(wizard, "#result-base"))
            line = text_of(wizard, "#result-base")
            assert "\n" not in line and "onnect" in line, line
            assert result.size.height == 1
            assert isinstance(app.screen, NewSessionScreen)  # the UI stayed up
    asyncio.run(scenario())


def test_test_button_refuses_a_row_with_a_problem(tmp_path):
    async def scenario():
        app = PromptArborApp(tmp_path / "store")
        async with app.run_test(size=SMALL) as pilot:
            wizard = await open_wizard(pilot)
            wizard.query_one("#model-optimizer").value = "openai/x"
            wizard.query_one("#key-env-optimizer").value = "sk-live-0123456789abcdef"
            await settle(pilot, wizard)
            wizard.test_role("optimizer")
            await pilot.pause(0.1)
            assert "fix this row" in text_of(wizard, "#result-optimizer")
            assert "sk-live" not in text_of(wizard, "#result-optimizer")
    asyncio.run(scenario())


def test_the_estimate_prices_known_models_and_says_when_it_cannot(tmp_path):
    async def scenario():
        app = PromptArborApp(tmp_path / "store")
        async with app.run_test(size=LARGE) as pilot:
            wizard = await open_wizard(pilot)
            plan = text_of(wizard, "#plan")
            assert "Tokens ≈" in plan and "cost $0 (the embedded model runs here)" in plan
            wizard.query_one("#model-default").value = "openai/no-such-model-here"
            await settle(pilot, wizard)
            await wait_for(pilot, lambda: "cost unknown" in text_of(wizard, "#plan"),
                           timeout=90)  # the first price look-up loads litellm
            assert "openai/no-such-model-here" in text_of(wizard, "#plan")
            assert "$0" not in text_of(wizard, "#plan")
            wizard.query_one("#model-default").value = "openai/gpt-4o-mini"
            await settle(pilot, wizard)
            await wait_for(pilot, lambda: "cost ≈ $" in text_of(wizard, "#plan"), timeout=60)
    asyncio.run(scenario())


def test_a_wizard_session_against_its_own_server_runs_its_root(tmp_path, fake_server,
                                                               fake_key, seed_file,
                                                               monkeypatch):
    """The issue's failure: a wizard session against a local OpenAI-compatible server
    failed at the root on missing credentials (no api_base, no key variable)."""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)

    async def scenario():
        app = PromptArborApp(tmp_path / "store")
        async with app.run_test(size=SMALL) as pilot:
            wizard = await open_wizard(pilot)
            await pilot.press(*"own-server")
            wizard.query_one("#model-default").value = "openai/fake-model"
            wizard.query_one("#api-base-default").value = fake_server.base_url
            wizard.query_one("#key-env-default").value = "PA_FAKE_KEY"
            small_drpo(wizard, seed_file)
            await settle(pilot, wizard)
            wizard.test_role("default")
            await wait_for(pilot, lambda: "ok ·" in text_of(wizard, "#result-default"))
            await pilot.press("ctrl+s")
            screen = await open_workbench(pilot)
            session_id = screen.session_id
            await pilot.press("space")  # judge the root
            await wait_for(pilot, lambda: stored(tmp_path, session_id)["steps"] == 1)
            await wait_for(pilot, lambda: not screen.busy)
        session = stored(tmp_path, session_id)
        assert session["name"] == "own-server"
        root = session["tree"]["nodes"][session["tree"]["roots"][0]]
        assert root["status"] != "failed", root.get("error")
        assert root["reward"] is not None
        assert not [r for r in session["call_log"] if r.get("error")]
        assert any(r["model"] == "fake-model" for r in fake_server.requests)
    asyncio.run(scenario())


def test_key_shapes_and_short_errors():
    assert looks_like_key("sk-abc123") and looks_like_key("hf_AbCdEf0123456789xyz")
    assert looks_like_key("Ab3dEfGh1jKlMn0pQrStUvWxYz")  # a long mixed-case token
    assert not looks_like_key("OPENAI_API_KEY") and not looks_like_key("PA_FAKE_KEY")
    assert short_error("InternalServerError: litellm.InternalServerError: InternalServerError: "
                       "OpenAIException - Connection error.") == "Connection error."
    fatal = ("base model openai/x: authentication failed (HTTP 401): AuthenticationError: "
             "litellm.AuthenticationError: Incorrect API key provided: [redacted]")
    assert short_error(fatal).startswith("HTTP 401 authentication failed: Incorrect API key")


def test_escape_asks_before_dropping_a_filled_form_and_not_before_an_untouched_one(tmp_path):
    """escape (and the Cancel button) on a wizard whose fields were changed asks first: no
    keeps the form as filled, yes drops it; an untouched wizard closes at once."""
    from promptarbor.tui.screens.modals import ConfirmScreen

    async def scenario():
        app = PromptArborApp(tmp_path / "store")
        async with app.run_test(size=SMALL) as pilot:
            wizard = await open_wizard(pilot)
            await pilot.press("escape")  # nothing changed: closes
            await wait_for(pilot, lambda: not isinstance(app.screen, NewSessionScreen))
            assert not isinstance(app.screen, ConfirmScreen)

            wizard = await open_wizard(pilot)
            await pilot.press(*"tides")
            wizard.query_one("#num-drpo-depth").value = "3"
            await pilot.press("escape")
            await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen))
            assert "Drop this new session?" in screenshot_text(app)
            await pilot.press("escape")  # no: the form as it was
            await wait_for(pilot, lambda: app.screen is wizard)
            assert wizard.query_one("#name").value == "tides"
            assert wizard.query_one("#num-drpo-depth").value == "3"
            await pilot.click("#cancel")  # the button asks too
            await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen))
            await pilot.press("y")
            await wait_for(pilot, lambda: not isinstance(app.screen, (NewSessionScreen,
                                                                      ConfirmScreen)))
            assert not list((tmp_path / "store").glob("sessions/*.json"))

    asyncio.run(scenario())
