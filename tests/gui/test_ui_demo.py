"""`busted ui --demo` in a real window: rows rendered, screenshot, filters, keys."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from polling import wait_for

from .conftest import read_rgb, text_bands

pytestmark = pytest.mark.gui


def rows_rendered(state: dict) -> bool:
    # A few frames in: the first ones come before the window is mapped on the X server.
    return state["frame"] >= 10 and state["view_len"] >= 50 and len(state["rows"]) >= 10


def test_demo_window_renders_a_full_table(launch, short_tmp):
    ui = launch("--demo")
    state = ui.wait_state(rows_rendered, what="the table to hold demo events")
    assert state["state"] == "demo"
    assert state["visible_rows"] >= 10
    # The rows on screen are the newest events, in order (auto-scroll follows).
    assert state["follow"] is True
    seqs = [r["seq"] for r in state["rows"]]
    assert seqs == sorted(seqs)
    assert len(state["providers"]) >= 5

    shot = ui.screenshot(short_tmp / "demo.png")
    width, height, raw = rgb = read_rgb(shot)
    assert (width, height) == (1280, 800)
    # Not blank: many colours, and not one flat background.
    colours = {raw[i : i + 3] for i in range(0, len(raw), 3 * 97)}
    assert len(colours) > 100, f"only {len(colours)} colours: blank window?"
    # Rows rendered: the table's area holds a text line per visible row (+ header).
    state = ui.state()
    x, y, w, h = state["table_rect"]
    assert w > 400 and h > 200, state["table_rect"]
    bands = text_bands(rgb, (x + 4, y, min(w, 600) - 8, h))
    assert bands >= min(state["visible_rows"], 10), (bands, state["visible_rows"])


def test_filters_reduce_the_rows_and_clearing_restores_them(launch):
    ui = launch("--demo", "--demo-rate", "80")
    ui.wait_state(lambda s: s["stored"] >= 300, what="some demo history")

    state = ui.command(cmd="filter", decision="deny")
    assert state["filter"]["decision"] == "deny"
    assert 0 < state["view_len"] < state["stored"]
    assert state["rows"], "denied events exist in the demo traffic"
    assert all(r["cells"][6] == "deny" for r in state["rows"])

    state = ui.command(cmd="filter", provider="OpenAI", pii_only=True)
    assert all(r["cells"][2] == "OpenAI" and r["cells"][7].startswith("PII")
               for r in state["rows"])

    state = ui.command(cmd="filter", text="run_shell")
    assert state["rows"] and all("run_shell" in r["cells"][4] for r in state["rows"])

    state = ui.command(cmd="clear_filter")
    assert state["view_len"] == state["stored"]


def test_pause_freezes_the_table_while_counting_goes_on(launch):
    ui = launch("--demo", "--demo-rate", "100")
    ui.wait_state(rows_rendered, what="rows")
    paused = ui.command(cmd="pause")
    assert paused["paused"] is True
    frozen = [r["uid"] for r in paused["rows"]]
    later = ui.wait_state(lambda s: s["total"] > paused["total"] + 20, what="more events")
    assert [r["uid"] for r in later["rows"]] == frozen
    resumed = ui.command(cmd="resume")
    ui.wait_state(lambda s: s["rows"][-1]["uid"] > frozen[-1], what="the table to move on")
    assert resumed["paused"] is False


def test_detail_panel_and_other_views_survive_selection_and_tabs(launch, short_tmp):
    ui = launch("--demo")
    ui.wait_state(rows_rendered, what="rows")
    state = ui.command(cmd="select", position=-1)
    assert state["selected"] is not None
    for tab in ("providers", "processes", "events"):
        state = ui.command(cmd="tab", name=tab)
        assert state["tab"] == tab
    state = ui.command(cmd="help", show=True)
    ui.screenshot(short_tmp / "help.png")
    ui.command(cmd="help", show=False)


def test_keyboard_shortcuts_reach_the_window(launch, display):
    if shutil.which("xdotool") is None:
        pytest.fail("xdotool is not installed (deploy/setup-host.sh installs it)")
    ui = launch("--demo")
    ui.wait_state(rows_rendered, what="rows")

    def press(*keys: str) -> None:
        subprocess.run(["xdotool", "search", "--sync", "--name", "Busted", "windowfocus",
                        "--sync", "key", "--delay", "80", *keys],
                       env={"DISPLAY": display}, check=True, timeout=20)

    press("space")
    ui.wait_state(lambda s: s["paused"], what="Space to pause")
    press("space")
    ui.wait_state(lambda s: not s["paused"], what="Space to resume")
    press("d")
    ui.wait_state(lambda s: s["filter"]["decision"] == "deny", what="D to filter denies")
    press("Escape")
    ui.wait_state(lambda s: s["filter"]["decision"] == "", what="Esc to clear")
    # Search from the keyboard; letters typed there are text, not shortcuts.
    press("ctrl+f")
    ui.wait_state(lambda s: s["typing"], what="Ctrl+F to focus the search field")
    subprocess.run(["xdotool", "type", "--delay", "80", "deny p"], env={"DISPLAY": display},
                   check=True, timeout=20)
    state = ui.wait_state(lambda s: s["filter"]["text"] == "deny p", what="typed search")
    assert not state["paused"] and state["filter"]["decision"] == ""
    assert 0 < state["view_len"] < state["stored"]
    press("Escape")
    state = ui.wait_state(lambda s: s["filter"]["text"] == "", what="Esc to clear the search")
    # Esc leaves the search field a frame later; a "/" typed before that is just text.
    ui.wait_state(lambda s: not s["typing"], what="Esc to leave the search field")
    press("slash")
    ui.wait_state(lambda s: s["typing"], what="/ to focus the search field")
    subprocess.run(["xdotool", "type", "--delay", "80", "curl"], env={"DISPLAY": display},
                   check=True, timeout=20)
    ui.wait_state(lambda s: s["filter"]["text"] == "curl", what="/ to search")
    press("Return", "Escape")
    ui.wait_state(lambda s: s["filter"]["text"] == "", what="Esc to clear the search")
    press("Up")
    ui.wait_state(lambda s: s["selected"] is not None and not s["follow"],
                  what="Up to select and stop following")
    press("End")
    wait_for(lambda: ui.state()["follow"], what="End to follow again")
    press("Page_Up")
    ui.wait_state(lambda s: not s["follow"], what="PgUp to scroll back")
    press("End")
    wait_for(lambda: ui.state()["follow"], what="End to follow again")
    # The mouse wheel up over the table scrolls back and stops following.
    state = ui.state()
    x, y, w, h = state["table_rect"]
    subprocess.run(["xdotool", "mousemove", str(x + w // 2), str(y + h // 2), "click",
                    "--repeat", "3", "--delay", "60", "4"],
                   env={"DISPLAY": display}, check=True, timeout=20)
    ui.wait_state(lambda s: not s["follow"], what="the wheel to stop following")


def test_mouse_clicks_select_rows_and_filter_by_process(launch, display):
    if shutil.which("xdotool") is None:
        pytest.fail("xdotool is not installed (deploy/setup-host.sh installs it)")
    ui = launch("--demo")
    state = ui.wait_state(rows_rendered, what="rows")

    def click(x: int, y: int) -> None:
        # Window-relative coordinates: the viewport is not at the screen's origin.
        subprocess.run(["sh", "-c", "xdotool mousemove --window $(xdotool search --sync --name "
                        f"Busted | head -1) {x} {y} click 1"],
                       env={"DISPLAY": display, "PATH": "/usr/bin:/bin"}, check=True, timeout=20)

    state = ui.wait_state(lambda s: s["first_row_y"] > 0, what="rows measured")
    x = state["table_rect"][0]
    click(x + 60, state["first_row_y"] + 3 * state["row_pitch"] + state["row_pitch"] // 2)
    state = ui.wait_state(lambda s: s["selected"] is not None, what="a click to select a row")
    ui.command(cmd="tab", name="processes")
    state = ui.wait_state(lambda s: s["tab"] == "processes" and s["frame"] > state["frame"] + 3,
                          what="the processes view")
    px, py, _, _ = state["areas"]["processes_area"]
    click(px + 40, py + 8 + state["row_pitch"] + state["row_pitch"] // 2)  # the busiest
    state = ui.wait_state(lambda s: s["tab"] == "events" and s["filter"]["pid"],
                          what="a click on a process to filter the events table")
    pid = state["filter"]["pid"]
    assert state["rows"] and all(r["cells"][1].endswith(f"({pid})") for r in state["rows"])


def test_blind_spots_show_in_the_header_and_the_table(launch):
    ui = launch("--demo")
    state = ui.wait_state(lambda s: "blind" in (s.get("blind_label") or ""),
                          what="the header's blind indicator")
    assert state["blind_label"].strip() == "⚠ 1 blind"
    state = ui.command(cmd="filter", text="JSSE")
    assert state["rows"], "the demo's BLIND_SPOT event is in the table"
    assert all(r["cells"][4] == "⚠ BLIND · Java" for r in state["rows"])


def test_processes_view_shows_which_processes_are_seen_and_which_are_blind(launch):
    ui = launch("--demo")
    ui.wait_state(rows_rendered, what="rows")
    ui.command(cmd="tab", name="processes")

    def visibility_rows(state: dict) -> dict[str, dict] | None:
        by_name = {r["cells"]["Process"]: r for r in state["processes_rows"]}
        return by_name if "java (4711)" in by_name else None

    by_name = visibility_rows(ui.wait_state(visibility_rows, what="the processes table"))
    java = by_name["java (4711)"]
    assert java["cells"]["Visibility"] == "⚠ blind: Java"
    assert any("JSSE" in tip and "/bin/java" in tip and "api.openai.com" in tip
               for tip in java["tips"]), java["tips"]
    shown = {name: r["cells"]["Visibility"] for name, r in by_name.items()}
    # The demo's agents talk to their providers through probed TLS (or a local socket).
    seen = [name for name, how in shown.items() if how.startswith("seen")]
    assert len(seen) >= 3, shown
    assert [name for name, how in shown.items() if how.startswith("⚠")] == ["java (4711)"], shown
