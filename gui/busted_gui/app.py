"""The Dear PyGui window: header, events table, detail panel, providers and processes.

The render loop owns every Dear PyGui call and never touches a socket: each frame it
drains a bounded number of events from the source's inbox (filled by the stream or demo
thread) into the :class:`~busted_gui.model.EventStore`, then updates only what changed.

The events table is *virtual*: a fixed pool of rows (as many as fit) whose cells are
rewritten from the visible slice of the filtered view. Creating a table row costs
~43 µs (shared/measurements.md), so a table that grows and shrinks with 5,000 events/s
would eat the frame; rewriting ~40 rows of text costs about a millisecond whatever the
rate. Scrolling is ours too (wheel, scrollbar, keys); following the newest events
stops as soon as the user scrolls up and resumes at the bottom (or with End).
"""

from __future__ import annotations

import bisect
import logging
import sys
import time
from collections import deque
from typing import Any, Protocol

import dearpygui.dearpygui as dpg

from busted_gui import detail, theme
from busted_gui.hooks import TestHooks
from busted_gui.model import (
    COLUMNS,
    DEFAULT_MAX_EVENTS,
    EventStore,
    Filter,
    decision_of,
    format_time,
    human_bytes,
    human_count,
    process_key,
    provider_of,
    row_cells,
    timestamp_of,
)
from busted_gui.stream import PROBLEM_STATES, STALE, ConnectionStatus

log = logging.getLogger("busted.ui")

MAX_INGEST_PER_FRAME = 4_000  # events moved from the inbox to the store per frame
ROW_HEIGHT = 23
MAX_ROWS = 80  # the row pool: enough for a tall window
DETAIL_WIDTH = 350
SLOW_VIEWS_INTERVAL_S = 1.0  # providers / processes tables and drop-down choices
ALL = "All"
# Dear PyGui 2.x maps mvKey_Prior / mvKey_Next to stale codes (266/267) whose handlers
# fire on every frame; these are Dear ImGui's own PageUp / PageDown key numbers.
KEY_PAGE_UP = 517
KEY_PAGE_DOWN = 518

# Column weights of the events table (stretch: they share the width in these ratios).
_WEIGHTS = (0.66, 1.1, 0.95, 1.4, 1.4, 1.08, 0.64, 0.55, 1.15, 0.68)

HELP = (
    ("Space", "Pause / resume the table (the header keeps counting)"),
    ("/  or  Ctrl+F", "Search (every word must match)"),
    ("Esc", "Clear search and filters (or close this help)"),
    ("↑ ↓  /  J K", "Select the previous / next event"),
    ("PgUp PgDn", "Scroll a page"),
    ("Home / End", "Oldest event / newest event (and follow)"),
    ("F", "Follow newest events on / off"),
    ("P", "Show only events with PII"),
    ("D", "Cycle the decision filter: deny, audit, allow, all"),
    ("I", "Show / hide the detail panel"),
    ("1  2  3", "Events / Providers / Processes & agents"),
    ("G", "Processes view: group by process or by agent identity"),
    ("F1  or  ?", "This help"),
    ("Ctrl+Q", "Quit"),
)


class Source(Protocol):
    """What the dashboard needs from the live stream or the demo generator."""

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def drain(self, max_events: int) -> list[dict[str, Any]]: ...

    def status(self) -> ConnectionStatus: ...


class Dashboard:
    """Builds the window and updates it once per frame."""

    def __init__(
        self,
        source: Source,
        max_events: int = DEFAULT_MAX_EVENTS,
        title: str = "Busted",
        hooks: TestHooks | None = None,
        clock=time.time,
    ) -> None:
        self.source = source
        self.store = EventStore(max_events, clock=clock)
        self.title = title
        self.hooks = hooks
        self.clock = clock
        self.fonts = theme.Fonts()

        self.paused = False
        self.frozen: list[int] | None = None  # the view as it was when paused
        self.frozen_events: dict[int, dict[str, Any]] = {}
        self.frozen_all: list[int] = []
        self.follow = True
        self.top = 0  # first visible position in the (filtered) view
        self.visible_rows = 20
        self.selected: int | None = None  # uid
        self.selected_event: dict[str, Any] | None = None
        self.show_detail = True
        self.tab = "events"
        self.group_by = "process"
        self.quit_requested = False

        self.frame_count = 0
        self.frame_times: deque[float] = deque(maxlen=600)
        self.update_times: deque[float] = deque(maxlen=600)  # our work per frame
        self.render_times: deque[float] = deque(maxlen=600)  # Dear PyGui's
        self._last_frame = time.perf_counter()
        self._next_slow = 0.0
        self._next_plot = 0.0
        self._status = ConnectionStatus()
        self._row_uid: list[int | None] = [None] * MAX_ROWS
        self._row_shown = [True] * MAX_ROWS
        self._row_mark: list[str] = [""] * MAX_ROWS
        self._row_sel = [False] * MAX_ROWS
        self._row_text: list[tuple[str, ...]] = [("",) * len(COLUMNS)] * MAX_ROWS
        self._next_table = 0.0
        self.row_pitch = 28  # measured after the first frames (_measure_rows)
        self.header_height = 28
        self.first_row_y = 0
        self._row_measured = False
        self._table_height = 0
        self._next_top_bar = 0.0
        self._drawn_version = -1
        self._drawn_top = -1
        self._drawn_selected: int | None = -1
        self._choices: dict[str, list[str]] = {}
        self._ids: dict[str, Any] = {}
        self._cells: list[list[Any]] = []
        self._rows: list[Any] = []
        self._selectables: list[Any] = []
        self._cards: dict[str, Any] = {}
        self._screenshots: list[str] = []
        self._pending_shot = ""

    # ================================================================== building ====
    def build(self) -> None:
        """Create every widget (inside an existing Dear PyGui context)."""
        self.fonts.load()
        dpg.bind_theme(theme.global_theme())
        self._themes = {
            "banner_err": theme.child_theme((70, 26, 30, 255), (140, 50, 55, 255)),
            "banner_warn": theme.child_theme((66, 50, 20, 255), (130, 96, 40, 255)),
            "card": theme.child_theme(theme.PANEL, theme.BORDER),
            "paused": theme.button_theme((120, 86, 20, 255), (150, 108, 30, 255)),
            "normal": theme.button_theme((38, 45, 58, 255), (52, 62, 80, 255)),
            "follow_on": theme.button_theme((30, 70, 50, 255), (40, 90, 64, 255)),
            "rate": theme.series_theme(theme.ACCENT),
            "row_selectable": theme.row_selectable_theme(),
        }
        with dpg.window(tag="main", no_scrollbar=True) as main:
            self._build_top_bar()
            self._build_banner()
            self._build_header()
            with dpg.tab_bar(tag="tabs", callback=self._on_tab):
                with dpg.tab(label="  Events  ", tag="tab_events"):
                    self._build_events()
                with dpg.tab(label="  Providers  ", tag="tab_providers"):
                    self._build_providers()
                with dpg.tab(label="  Processes & agents  ", tag="tab_processes"):
                    self._build_processes()
        dpg.set_primary_window(main, True)
        self._build_help()
        self._build_handlers()

    def _build_top_bar(self) -> None:
        with dpg.table(header_row=False, borders_innerV=False, policy=dpg.mvTable_SizingFixedFit):
            dpg.add_table_column(width_stretch=True)
            dpg.add_table_column(width_fixed=True)
            with dpg.table_row():
                with dpg.group(horizontal=True):
                    title = dpg.add_text("BUSTED", color=theme.ACCENT)
                    _bind_font(title, self.fonts.big)
                    with dpg.group():
                        dpg.add_spacer(height=4)
                        with dpg.group(horizontal=True):
                            self._ids["state"] = dpg.add_text("● CONNECTING", color=theme.AUDIT)
                            _bind_font(self._ids["state"], self.fonts.bold)
                            self._ids["rate"] = dpg.add_text("")
                            self._ids["endpoint"] = dpg.add_text("", color=theme.FAINT)
                with dpg.group(horizontal=True):
                    self._ids["pause"] = dpg.add_button(
                        label="Pause", width=110, callback=lambda: self.toggle_pause()
                    )
                    dpg.add_button(label="?  Help", width=80, callback=lambda: self.toggle_help())

    def _build_banner(self) -> None:
        with dpg.child_window(height=58, tag="banner", show=False, no_scrollbar=True):
            self._ids["banner_msg"] = dpg.add_text("", color=theme.TEXT)
            _bind_font(self._ids["banner_msg"], self.fonts.bold)
            self._ids["banner_hint"] = dpg.add_text("", color=(255, 220, 160, 255))
            _bind_font(self._ids["banner_hint"], self.fonts.mono)

    def _build_header(self) -> None:
        card_w, gap = 112, 8
        cards_w = 5 * card_w + 4 * gap
        with dpg.group(horizontal=True):
            with dpg.child_window(width=-cards_w - gap, height=132, no_scrollbar=True):
                with dpg.group(horizontal=True):
                    t = dpg.add_text("Events/s", color=theme.DIM)
                    _bind_font(t, self.fonts.small)
                    self._ids["plot_title"] = dpg.add_text("· last 5 minutes", color=theme.FAINT)
                    _bind_font(self._ids["plot_title"], self.fonts.small)
                with dpg.plot(
                    height=104, width=-1, no_title=True, no_menus=True, no_box_select=True,
                    no_mouse_pos=True, no_frame=True,
                ):
                    x = dpg.add_plot_axis(dpg.mvXAxis, no_gridlines=True, no_menus=True)
                    y = dpg.add_plot_axis(dpg.mvYAxis, no_menus=True)
                    self._ids["xaxis"], self._ids["yaxis"] = x, y
                    dpg.set_axis_limits(x, -300, 0)
                    dpg.set_axis_ticks(
                        x, (("-5m", -300), ("-4m", -240), ("-3m", -180), ("-2m", -120),
                            ("-1m", -60), ("now", 0)),
                    )
                    xs = [float(i) for i in range(-299, 1)]
                    self._ids["shade"] = dpg.add_shade_series(xs, [0.0] * 300, parent=y)
                    self._ids["line"] = dpg.add_line_series(xs, [0.0] * 300, parent=y)
                    dpg.bind_item_theme(self._ids["shade"], self._themes["rate"])
                    dpg.bind_item_theme(self._ids["line"], self._themes["rate"])
            with dpg.group():
                rows = (
                    (("total", "Events"), ("active", "Active processes"), ("providers", "Providers"),
                     ("pii", "PII hits"), ("missed", "Missed (seq)")),
                    (("allow", "Allow"), ("audit", "Audit"), ("deny", "Deny"),
                     ("dropped", "Dropped"), ("lost", "Lost")),
                )
                for row in rows:
                    with dpg.group(horizontal=True, horizontal_spacing=gap):
                        for key, label in row:
                            self._card(key, label, card_w)

    def _card(self, key: str, label: str, width: int) -> None:
        with dpg.child_window(width=width, height=62, no_scrollbar=True) as card:
            t = dpg.add_text(label, color=theme.DIM)
            _bind_font(t, self.fonts.small)
            color = {"allow": theme.ALLOW, "audit": theme.AUDIT, "deny": theme.DENY,
                     "pii": theme.PII}.get(key, theme.TEXT)
            value = dpg.add_text("0", color=color)
            _bind_font(value, self.fonts.big)
        dpg.bind_item_theme(card, self._themes["card"])
        self._cards[key] = value

    def _build_events(self) -> None:
        with dpg.group(horizontal=True):
            self._ids["search"] = dpg.add_input_text(
                hint="Search  ( / )", width=200, callback=self._on_filter
            )
            self._ids["f_provider"] = self._combo("Provider", 118)
            self._ids["f_class"] = self._combo("Class", 126)
            self._ids["f_decision"] = self._combo("Decision", 74)
            self._ids["f_process"] = self._combo("Process", 118)
            self._ids["f_pii"] = dpg.add_checkbox(label="PII only", callback=self._on_filter)
            dpg.add_button(label="Clear", callback=lambda: self.clear_filter())
            self._ids["follow"] = dpg.add_button(
                label="Following", width=96, callback=lambda: self.set_follow(not self.follow)
            )
            self._ids["count"] = dpg.add_text("", color=theme.DIM)
        with dpg.group(horizontal=True):
            with dpg.child_window(
                width=-DETAIL_WIDTH - 8, height=-1, no_scrollbar=True,
                no_scroll_with_mouse=True, tag="table_area",
            ):
                with dpg.group(horizontal=True):
                    self._build_table()
                    self._ids["scroll"] = dpg.add_slider_int(
                        vertical=True, width=14, height=-1, min_value=0, max_value=0,
                        format="", callback=self._on_scrollbar,
                    )
                self._ids["empty"] = dpg.add_text("", color=theme.DIM, pos=(24, 60))
            with dpg.child_window(width=-1, height=-1, tag="detail"):
                self._ids["detail_body"] = dpg.add_group()
        self._render_detail()

    def _combo(self, label: str, width: int) -> Any:
        with dpg.group(horizontal=True, horizontal_spacing=4):
            t = dpg.add_text(label, color=theme.DIM)
            _bind_font(t, self.fonts.small)
            return dpg.add_combo([ALL], default_value=ALL, width=width, callback=self._on_filter)

    def _build_table(self) -> None:
        with dpg.table(
            tag="events_table", header_row=True, row_background=False, borders_innerV=False,
            borders_outerH=False, borders_innerH=True, policy=dpg.mvTable_SizingStretchProp,
            resizable=True, width=-20, no_host_extendX=True,
        ):
            _bind_font("events_table", self.fonts.table)
            for name, weight in zip(COLUMNS, _WEIGHTS, strict=True):
                dpg.add_table_column(label=name, init_width_or_weight=weight)
            align = self._themes["row_selectable"]
            for i in range(MAX_ROWS):
                with dpg.table_row(height=ROW_HEIGHT, show=i < 1) as row:
                    sel = dpg.add_selectable(
                        label="", span_columns=True, user_data=i, callback=self._on_row_click,
                        height=18,
                    )
                    dpg.bind_item_theme(sel, align)
                    cells = [sel]
                    for col in range(1, len(COLUMNS)):
                        static = {7: theme.PII, 8: theme.DIM, 9: theme.DIM}.get(col)
                        cells.append(dpg.add_text("", color=static or (-255, 0, 0, 255)))
                    _bind_font(cells[6], self.fonts.table_bold)
                self._rows.append(row)
                self._cells.append(cells)
                self._row_shown[i] = i < 1

    def _build_providers(self) -> None:
        dpg.add_text("Everything seen since the dashboard started. Click a provider to "
                     "filter the events table.", color=theme.DIM)
        with dpg.child_window(height=-1, width=-1, tag="providers_area"):
            self._ids["providers_table"] = None

    def _build_processes(self) -> None:
        with dpg.group(horizontal=True):
            dpg.add_text("Group by", color=theme.DIM)
            self._ids["group_by"] = dpg.add_radio_button(
                ("process", "agent identity"), horizontal=True, default_value="process",
                callback=lambda s, a: self.set_group_by("process" if a == "process" else "identity"),
            )
            dpg.add_text("   Click a row to filter the events table by its process.",
                         color=theme.DIM)
        with dpg.child_window(height=-1, width=-1, tag="processes_area"):
            self._ids["processes_table"] = None

    def _build_help(self) -> None:
        with dpg.window(
            label="Keyboard shortcuts", modal=True, show=False, tag="help", width=560,
            height=590, no_resize=True, no_collapse=True, on_close=lambda: self.toggle_help(False),
        ):
            with dpg.table(header_row=False, policy=dpg.mvTable_SizingFixedFit,
                           row_background=True):
                dpg.add_table_column(width_fixed=True, init_width_or_weight=150)
                dpg.add_table_column(width_stretch=True)
                for key, what in HELP:
                    with dpg.table_row():
                        t = dpg.add_text(key, color=theme.ACCENT)
                        _bind_font(t, self.fonts.bold)
                        dpg.add_text(what)
            dpg.add_spacer(height=6)
            dpg.add_text("Decisions: ", color=theme.DIM)
            with dpg.group(horizontal=True):
                dpg.add_text("deny", color=theme.DENY)
                dpg.add_text("audit", color=theme.AUDIT)
                dpg.add_text("allow", color=theme.ALLOW)
                dpg.add_text("   PII", color=theme.PII)
                dpg.add_text("   (⇢ = streaming response)", color=theme.DIM)

    def _build_handlers(self) -> None:
        keys = {
            dpg.mvKey_Spacebar: lambda: self.toggle_pause(),
            dpg.mvKey_Escape: self._on_escape,
            dpg.mvKey_Up: lambda: self.move_selection(-1),
            dpg.mvKey_K: lambda: self.move_selection(-1),
            dpg.mvKey_Down: lambda: self.move_selection(1),
            dpg.mvKey_J: lambda: self.move_selection(1),
            KEY_PAGE_UP: lambda: self.scroll(-self.visible_rows),
            KEY_PAGE_DOWN: lambda: self.scroll(self.visible_rows),
            dpg.mvKey_Home: lambda: self.scroll_to(0),
            dpg.mvKey_End: lambda: self.set_follow(True),
            dpg.mvKey_F: self._on_f,
            dpg.mvKey_P: lambda: self.apply_filter(self.store.filter.with_(
                pii_only=not self.store.filter.pii_only)),
            dpg.mvKey_D: self.cycle_decision,
            dpg.mvKey_I: lambda: self.toggle_detail(),
            dpg.mvKey_G: lambda: self.set_group_by(
                "identity" if self.group_by == "process" else "process"),
            dpg.mvKey_1: lambda: self.set_tab("events"),
            dpg.mvKey_2: lambda: self.set_tab("providers"),
            dpg.mvKey_3: lambda: self.set_tab("processes"),
            dpg.mvKey_F1: lambda: self.toggle_help(),
            dpg.mvKey_H: lambda: self.toggle_help(),
            dpg.mvKey_Slash: self._on_slash,
            dpg.mvKey_Q: self._on_q,
        }
        with dpg.handler_registry():
            for key, action in keys.items():
                dpg.add_key_press_handler(key, callback=self._guard(action))
            dpg.add_mouse_wheel_handler(callback=self._on_wheel)

    def _guard(self, action):
        """Shortcuts are plain keys: ignore them while the user types in a text field."""

        def handler(sender=None, app_data=None, user_data=None):
            if self._typing() and action not in (self._on_escape,):
                return
            action()

        return handler

    def _typing(self) -> bool:
        return bool(dpg.is_item_active(self._ids["search"]))

    # ================================================================== actions ====
    def toggle_pause(self, paused: bool | None = None) -> None:
        self.paused = (not self.paused) if paused is None else paused
        if self.paused:
            view = list(self.store.view())
            self.frozen_events = {uid: e for uid in view if (e := self.store.get(uid)) is not None}
            self.frozen_all = list(self.frozen_events)
            self.frozen = view
            dpg.configure_item(self._ids["pause"], label="▶  Resume")
            dpg.bind_item_theme(self._ids["pause"], self._themes["paused"])
        else:
            self.frozen = None
            self.frozen_events = {}
            dpg.configure_item(self._ids["pause"], label="Pause")
            dpg.bind_item_theme(self._ids["pause"], self._themes["normal"])
        self._drawn_version = -1

    def toggle_help(self, show: bool | None = None) -> None:
        show = (not dpg.is_item_shown("help")) if show is None else show
        if show:
            w, h = dpg.get_viewport_client_width(), dpg.get_viewport_client_height()
            dpg.set_item_pos("help", ((w - 560) // 2, max(20, (h - 590) // 2)))
        dpg.configure_item("help", show=show)

    def toggle_detail(self) -> None:
        self.show_detail = not self.show_detail
        dpg.configure_item("detail", show=self.show_detail)
        dpg.configure_item("table_area", width=-DETAIL_WIDTH - 8 if self.show_detail else -1)

    def set_tab(self, name: str) -> None:
        self.tab = name
        dpg.set_value("tabs", f"tab_{name}")
        self._next_slow = 0.0

    def set_group_by(self, by: str) -> None:
        self.group_by = by
        dpg.set_value(self._ids["group_by"], "process" if by == "process" else "agent identity")
        self._next_slow = 0.0

    def set_follow(self, follow: bool) -> None:
        self.follow = follow
        if follow:
            self.top = max(0, self._view_len() - self.visible_rows)
        self._drawn_top = -1

    def scroll(self, delta: int) -> None:
        self.scroll_to(self.top + delta)

    def scroll_to(self, top: int) -> None:
        bottom = max(0, self._view_len() - self.visible_rows)
        self.top = min(max(0, top), bottom)
        self.follow = self.top >= bottom

    def move_selection(self, delta: int) -> None:
        view = self._view()
        if not view:
            return
        if self.selected is None:
            pos = len(view) - 1 if delta < 0 else max(0, self.top)
        else:
            pos = bisect.bisect_left(view, self.selected) + delta
        pos = min(max(0, pos), len(view) - 1)
        self.select_uid(view[pos])
        # Walking through rows means reading them: stop following (End resumes).
        self.follow = False
        if pos < self.top:
            self.scroll_to(pos)
        elif pos >= self.top + self.visible_rows:
            self.scroll_to(pos - self.visible_rows + 1)

    def select_uid(self, uid: int | None) -> None:
        self.selected = uid
        event = None
        if uid is not None:
            event = self.frozen_events.get(uid) if self.paused else None
            event = event or self.store.get(uid)
        self.selected_event = event
        self._render_detail()

    def apply_filter(self, new: Filter) -> None:
        self.store.set_filter(new)
        if self.paused:
            self.frozen = [u for u in self.frozen_all if new.matches(self.frozen_events[u])]
        self._sync_filter_widgets()
        if self.follow:
            self.set_follow(True)
        else:
            self.scroll_to(self.top)
        self._drawn_version = -1

    def clear_filter(self) -> None:
        self.apply_filter(Filter())

    def cycle_decision(self) -> None:
        order = ["deny", "audit", "allow", ""]
        current = self.store.filter.decision
        nxt = order[(order.index(current) + 1) % len(order)] if current in order else ""
        self.apply_filter(self.store.filter.with_(decision=nxt))

    def _sync_filter_widgets(self) -> None:
        f = self.store.filter
        if dpg.get_value(self._ids["search"]) != f.text:
            dpg.set_value(self._ids["search"], f.text)
        for key, value in (
            ("f_provider", f.provider), ("f_class", f.content_class),
            ("f_decision", f.decision), ("f_process", f.process),
        ):
            dpg.set_value(self._ids[key], value or ALL)
        dpg.set_value(self._ids["f_pii"], f.pii_only)

    # ================================================================= callbacks ====
    def _on_filter(self, sender=None, app_data=None, user_data=None) -> None:
        def combo(key: str) -> str:
            value = dpg.get_value(self._ids[key]) or ALL
            return "" if value == ALL else value

        process = combo("f_process")
        current = self.store.filter
        self.apply_filter(
            Filter(
                text=dpg.get_value(self._ids["search"]) or "",
                provider=combo("f_provider"),
                content_class=combo("f_class"),
                decision=combo("f_decision"),
                process=process,
                pid=current.pid if process and process == current.process else 0,
                pii_only=bool(dpg.get_value(self._ids["f_pii"])),
            )
        )

    def _on_tab(self, sender, app_data) -> None:
        alias = dpg.get_item_alias(app_data) or ""
        self.tab = alias.removeprefix("tab_") or "events"
        self._next_slow = 0.0

    def _on_row_click(self, sender, app_data, user_data) -> None:
        uid = self._row_uid[user_data]
        self.select_uid(uid)
        self._drawn_selected = -1

    def _on_scrollbar(self, sender, app_data) -> None:
        # A vertical slider has its maximum at the top: newest events are at the bottom.
        bottom = max(0, self._view_len() - self.visible_rows)
        self.scroll_to(bottom - int(app_data))

    def _on_wheel(self, sender, app_data) -> None:
        if self.tab != "events" or dpg.is_item_shown("help"):
            return
        if dpg.is_item_hovered("table_area") or dpg.is_item_hovered("events_table"):
            self.scroll(-int(app_data) * 3)

    def _on_escape(self) -> None:
        if dpg.is_item_shown("help"):
            self.toggle_help(False)
        else:
            self.clear_filter()

    def _on_f(self) -> None:
        if dpg.is_key_down(dpg.mvKey_ModCtrl) or dpg.is_key_down(dpg.mvKey_LControl):
            dpg.focus_item(self._ids["search"])
        else:
            self.set_follow(not self.follow)

    def _on_slash(self) -> None:
        if dpg.is_key_down(dpg.mvKey_LShift) or dpg.is_key_down(dpg.mvKey_RShift):
            self.toggle_help()
        else:
            self.set_tab("events")
            dpg.focus_item(self._ids["search"])

    def _on_q(self) -> None:
        if dpg.is_key_down(dpg.mvKey_ModCtrl) or dpg.is_key_down(dpg.mvKey_LControl):
            self.quit_requested = True

    # ==================================================================== frame =====
    def frame(self) -> None:
        """Everything the dashboard does between two rendered frames."""
        start = time.perf_counter()
        self.frame_times.append(start - self._last_frame)
        self._last_frame = start
        self.frame_count += 1
        now = self.clock()

        if self.hooks is not None:
            self.hooks.run_commands(self.execute)
        events = self.source.drain(MAX_INGEST_PER_FRAME)
        if events:
            self.store.add_many(events)
        self._status = self.source.status()

        if now >= self._next_top_bar:
            self._next_top_bar = now + 0.25
            self._update_top_bar()
        if now >= self._next_plot:
            self._next_plot = now + 0.5
            self._update_header(now)
        if self.tab == "events":
            self._update_table()
        if now >= self._next_slow:
            self._next_slow = now + SLOW_VIEWS_INTERVAL_S
            self._update_choices()
            if self.tab == "providers":
                self._rebuild_providers(now)
            elif self.tab == "processes":
                self._rebuild_processes(now)
        if self._pending_shot:
            dpg.output_frame_buffer(file=self._pending_shot)
            self._screenshots.append(self._pending_shot)
            self._pending_shot = ""
        if self.hooks is not None:
            self.hooks.write_state(self.snapshot)
        self.update_times.append(time.perf_counter() - start)

    def _update_top_bar(self) -> None:
        s = self._status
        label = {"live": "LIVE", "demo": "DEMO", "connecting": "CONNECTING", "stale": "STALE",
                 "no-daemon": "NO DAEMON", "permission": "NO PERMISSION",
                 "error": "ERROR"}.get(s.state, s.state.upper())
        dpg.set_value(self._ids["state"], f"● {label}")
        dpg.configure_item(self._ids["state"], color=theme.STATE_COLORS.get(s.state, theme.DIM))
        rate = s.events_per_s if s.state != "demo" else self.store.rate.rate(self.clock())
        if s.state in PROBLEM_STATES:
            dpg.set_value(self._ids["rate"], "")
        else:
            paused = "   ·   PAUSED" if self.paused else ""
            dpg.set_value(self._ids["rate"], f"{human_count(rate)} events/s{paused}")
        where = "synthetic traffic, no daemon" if s.state == "demo" else s.endpoint
        if s.daemon_stats and s.state not in PROBLEM_STATES:
            where += "   ·   " + _daemon_summary(s.daemon_stats)
        dpg.set_value(self._ids["endpoint"], f"   {where}")
        problem = s.state in PROBLEM_STATES or s.state == STALE
        dpg.configure_item("banner", show=problem)
        if problem:
            dpg.set_value(self._ids["banner_msg"], s.message)
            dpg.set_value(self._ids["banner_hint"], s.hint)
            dpg.bind_item_theme(
                "banner", self._themes["banner_warn" if s.state == STALE else "banner_err"]
            )

    def _update_header(self, now: float) -> None:
        xs, ys = self.store.rate.series(now)
        peak = max(ys) if ys else 0.0
        dpg.set_value(self._ids["line"], [xs, ys])
        dpg.set_value(self._ids["shade"], [xs, ys, [0.0] * len(xs), xs])
        dpg.set_axis_limits(self._ids["yaxis"], 0, max(5.0, peak * 1.2))
        dpg.set_value(self._ids["plot_title"], f"· last 5 minutes · peak {human_count(peak)}/s")
        st = self.store
        stats = self._status.daemon_stats or {}
        values = {
            "total": human_count(st.total),
            "active": str(st.active_processes(now)),
            "providers": str(len(st.providers)),
            "pii": human_count(st.pii_total),
            "missed": human_count(self._status.missed + self._status.overflow),
            "allow": human_count(st.decisions.get("allow", 0)),
            "audit": human_count(st.decisions.get("audit", 0)),
            "deny": human_count(st.decisions.get("deny", 0)),
            "dropped": human_count(stats.get("dropped", 0)) if stats else "–",
            "lost": human_count(stats.get("lost", 0)) if stats else "–",
        }
        for key, value in values.items():
            dpg.set_value(self._cards[key], value)

    # --- the virtual events table ------------------------------------------------------
    def _view(self) -> list[int]:
        return self.frozen if self.paused and self.frozen is not None else self.store.view()

    def _view_len(self) -> int:
        return len(self._view())

    def _event(self, uid: int) -> dict[str, Any] | None:
        if self.paused:
            return self.frozen_events.get(uid)
        return self.store.get(uid)

    def _update_table(self) -> None:
        height = dpg.get_item_rect_size("table_area")[1] if self.frame_count > 1 else 600
        self._measure_rows()
        # Window padding (2 x 8) + the header row, then whole rows only.
        pitch = self.row_pitch
        rows = max(1, min(MAX_ROWS, int((height - 16 - self.header_height - 4) // pitch)))
        if rows != self.visible_rows:
            self.visible_rows = rows
            self._drawn_top = -1
        if int(height) != self._table_height:
            self._table_height = int(height)
            dpg.configure_item(self._ids["scroll"], height=int(height) - 16)
        view = self._view()
        n = len(view)
        bottom = max(0, n - rows)
        if self.follow:
            self.top = bottom
        self.top = min(self.top, bottom)
        version = self.store.version if not self.paused else -2
        if (
            version == self._drawn_version
            and self.top == self._drawn_top
            and self.selected == self._drawn_selected
        ):
            return
        # Following a fast stream, rows are unreadable above ~20 refreshes a second;
        # rewriting them every frame would only cost frame time.
        now = time.monotonic()
        if (
            self.follow
            and self._drawn_version >= 0
            and self.selected == self._drawn_selected
            and now < self._next_table
        ):
            return
        self._next_table = now + 0.05
        self._drawn_version, self._drawn_top = version, self.top
        self._drawn_selected = self.selected

        uids = view[self.top : self.top + rows]
        for i in range(MAX_ROWS):
            uid = uids[i] if i < len(uids) else None
            show = uid is not None
            if show != self._row_shown[i]:
                dpg.configure_item(self._rows[i], show=show)
                self._row_shown[i] = show
            if not show:
                self._row_uid[i] = None
                continue
            sel = uid == self.selected
            if sel != self._row_sel[i]:
                dpg.set_value(self._cells[i][0], sel)
                self._row_sel[i] = sel
            if uid == self._row_uid[i]:
                continue
            self._row_uid[i] = uid
            event = self._event(uid)
            if event is None:
                continue
            self._fill_row(i, event)

        dpg.configure_item(self._ids["scroll"], max_value=bottom)
        dpg.set_value(self._ids["scroll"], bottom - self.top)
        shown = f"{n:,} of {self.store.stored:,}" if self.store.filter.active else f"{n:,}"
        if self.store.filter.pid:
            shown = f"pid {self.store.filter.pid}: {shown}"
        state = "   ·   paused" if self.paused else ""
        dpg.set_value(self._ids["count"], f"{shown} events{state}")
        dpg.configure_item(
            self._ids["follow"], label="Following" if self.follow else "Follow (End)"
        )
        dpg.bind_item_theme(
            self._ids["follow"], self._themes["follow_on" if self.follow else "normal"]
        )
        if n == 0:
            dpg.set_value(self._ids["empty"], self._empty_message())
        else:
            dpg.set_value(self._ids["empty"], "")

    def _measure_rows(self) -> None:
        """Row pitch and header height as drawn (font, padding and theme decide them)."""
        if not (self._row_shown[0] and self._row_shown[1]) or self._row_measured:
            return
        first = dpg.get_item_state(self._cells[0][0]).get("rect_min")
        second = dpg.get_item_state(self._cells[1][0]).get("rect_min")
        if not first or not second or second[1] <= first[1]:
            return
        self.row_pitch = second[1] - first[1]
        self.header_height = first[1] - dpg.get_item_pos("table_area")[1] - 8
        self.first_row_y = first[1]
        self._row_measured = True

    def _fill_row(self, i: int, event: dict[str, Any]) -> None:
        cells = self._cells[i]
        values = row_cells(event)
        drawn = self._row_text[i]
        # Only what differs from what the row shows already: each call costs a few µs.
        if drawn[0] != values[0]:
            dpg.configure_item(cells[0], label=values[0])
        for col in range(1, len(values)):
            if drawn[col] != values[col]:
                dpg.set_value(cells[col], values[col])
        if drawn[2] != values[2]:
            dpg.configure_item(cells[2], color=theme.provider_color(values[2]))
        decision = decision_of(event)
        if drawn[6] != values[6]:
            dpg.configure_item(cells[6], color=theme.decision_color(decision))
        self._row_text[i] = values
        mark = decision if decision in ("deny", "audit") else ""
        if mark != self._row_mark[i]:
            if mark:
                color = theme.DENY_ROW if mark == "deny" else theme.AUDIT_ROW
                dpg.highlight_table_row("events_table", i, color)
            else:
                dpg.unhighlight_table_row("events_table", i)
            self._row_mark[i] = mark

    def _empty_message(self) -> str:
        s = self._status
        if self.store.filter.active and self.store.stored:
            return "No event matches the filters.   Esc clears them."
        if s.state in PROBLEM_STATES or s.state == STALE:
            return f"{s.message}\n{s.hint}"
        return "Waiting for events…"

    # --- detail panel -------------------------------------------------------------------
    def _render_detail(self) -> None:
        body = self._ids["detail_body"]
        dpg.delete_item(body, children_only=True)
        event = self.selected_event
        if event is None:
            dpg.add_text("Select an event", parent=body, color=theme.DIM)
            dpg.add_text("Click a row or use ↑ ↓ to see its prompt, response,\n"
                         "headers, policy decision and process.", parent=body, color=theme.FAINT)
            return
        wrap = DETAIL_WIDTH - 40
        with dpg.group(parent=body):
            with dpg.group(horizontal=True):
                decision = decision_of(event) or "—"
                t = dpg.add_text(decision.upper(), color=theme.decision_color(decision))
                _bind_font(t, self.fonts.big)
                with dpg.group():
                    dpg.add_spacer(height=2)
                    t = dpg.add_text(
                        f"{provider_of(event) or event.get('event_type', '')}  "
                        f"{event.get('llm_model') or event.get('mcp_tool') or ''}",
                        color=theme.provider_color(provider_of(event)),
                    )
                    _bind_font(t, self.fonts.bold)
                    dpg.add_text(
                        f"{format_time(timestamp_of(event))}   {process_key(event)}",
                        color=theme.DIM,
                    )
            for section in detail.sections(event):
                dpg.add_spacer(height=2)
                t = dpg.add_text(section.title.upper(), color=theme.ACCENT)
                _bind_font(t, self.fonts.small)
                dpg.add_separator()
                if section.text:
                    t = dpg.add_text(section.text, wrap=wrap)
                    if section.mono:
                        _bind_font(t, self.fonts.mono)
                if not section.fields:
                    continue
                with dpg.table(header_row=False, policy=dpg.mvTable_SizingFixedFit,
                               borders_innerV=False, borders_outerV=False, pad_outerX=False):
                    label_w = 120 if section.mono else 84
                    dpg.add_table_column(width_fixed=True, init_width_or_weight=label_w)
                    dpg.add_table_column(width_stretch=True)
                    for label, value in section.fields:
                        with dpg.table_row():
                            t = dpg.add_text(label, color=theme.DIM)
                            _bind_font(t, self.fonts.small)
                            color = theme.TEXT
                            if section.title == "Policy" and label == "decision":
                                color = theme.decision_color(value)
                            elif label == "PII":
                                color = theme.PII
                            t = dpg.add_text(value, wrap=wrap - label_w - 12, color=color)
                            if section.mono:
                                _bind_font(t, self.fonts.mono)

    # --- providers and processes (rebuilt once a second while visible) -----------------
    def _update_choices(self) -> None:
        choices = self.store.choices()
        for key, widget in (("provider", "f_provider"), ("content_class", "f_class"),
                            ("decision", "f_decision"), ("process", "f_process")):
            if choices[key] != self._choices.get(key):
                dpg.configure_item(self._ids[widget], items=[ALL, *choices[key]])
        self._choices = choices

    def _rebuild_providers(self, now: float) -> None:
        old = self._ids.get("providers_table")
        if old is not None:
            dpg.delete_item(old)
        cols = ("Provider", "Events", "Requests", "Responses", "Tokens in", "Tokens out",
                "Bytes", "Deny", "Audit", "Allow", "PII", "Processes", "Models", "Last seen")
        with dpg.table(parent="providers_area", header_row=True, row_background=True,
                       policy=dpg.mvTable_SizingStretchProp, borders_innerH=False,
                       borders_innerV=False) as table:
            for name in cols:
                weight = 3.0 if name == "Models" else 1.2 if name == "Provider" else 0.8
                dpg.add_table_column(label=name, init_width_or_weight=weight)
            for name, p in self.store.provider_rows():
                with dpg.table_row(height=ROW_HEIGHT):
                    self._row_selectable(name, name, self._filter_provider)
                    for value in (human_count(p.events), human_count(p.requests),
                                  human_count(p.responses), human_count(p.input_tokens),
                                  human_count(p.output_tokens), human_bytes(p.bytes)):
                        dpg.add_text(value)
                    _count(p.decisions.get("deny", 0), theme.DENY)
                    _count(p.decisions.get("audit", 0), theme.AUDIT)
                    _count(p.decisions.get("allow", 0), theme.ALLOW)
                    _count(p.pii, theme.PII)
                    dpg.add_text(str(len(p.processes)))
                    dpg.add_text(", ".join(m for m, _ in p.models.most_common(4)) or "—",
                                 color=theme.DIM)
                    dpg.add_text(_ago(now, p.last_seen), color=theme.DIM)
        _bind_font(table, self.fonts.table)
        self._ids["providers_table"] = table

    def _rebuild_processes(self, now: float) -> None:
        old = self._ids.get("processes_table")
        if old is not None:
            dpg.delete_item(old)
        by_identity = self.group_by == "identity"
        cols = ("Agent identity" if by_identity else "Process",
                "Narrative" if by_identity else "Container / pod", "SDK",
                "Events", "Requests", "Deny", "Audit", "Allow", "PII", "Providers", "Models",
                "Last seen")
        with dpg.table(parent="processes_area", header_row=True, row_background=True,
                       policy=dpg.mvTable_SizingStretchProp, borders_innerH=False,
                       borders_innerV=False) as table:
            for name in cols:
                weight = {"Providers": 2.0, "Models": 2.0, "Narrative": 3.2, "Process": 1.4,
                          "Agent identity": 1.8, "Container / pod": 1.3, "SDK": 1.3,
                          "Last seen": 0.9}.get(name, 0.62)
                dpg.add_table_column(label=name, init_width_or_weight=weight)
            for g in self.store.group_rows(self.group_by)[:300]:
                with dpg.table_row(height=ROW_HEIGHT):
                    target = (Filter(text=g.key) if by_identity
                              else Filter(process=g.process_name, pid=g.pid))
                    self._row_selectable(g.key, target, self._filter_process)
                    if by_identity:
                        dpg.add_text(g.narrative or "—", color=theme.DIM)
                    else:
                        dpg.add_text(g.container or "—", color=theme.DIM)
                    dpg.add_text(", ".join(sorted(g.sdks)) or "—")
                    dpg.add_text(human_count(g.events))
                    dpg.add_text(human_count(g.requests))
                    _count(g.decisions.get("deny", 0), theme.DENY)
                    _count(g.decisions.get("audit", 0), theme.AUDIT)
                    _count(g.decisions.get("allow", 0), theme.ALLOW)
                    _count(g.pii, theme.PII)
                    dpg.add_text(", ".join(p for p, _ in g.providers.most_common(4)) or "—")
                    dpg.add_text(", ".join(m for m, _ in g.models.most_common(3)) or "—",
                                 color=theme.DIM)
                    dpg.add_text(_ago(now, g.last_seen), color=theme.DIM)
        _bind_font(table, self.fonts.table)
        self._ids["processes_table"] = table

    def _row_selectable(self, label: str, user_data: Any, callback) -> None:
        sel = dpg.add_selectable(label=label, span_columns=True, user_data=user_data,
                                 callback=callback, height=18)
        dpg.bind_item_theme(sel, self._themes["row_selectable"])

    def _filter_provider(self, sender, app_data, user_data) -> None:
        self.apply_filter(Filter(provider=user_data))
        self.set_tab("events")

    def _filter_process(self, sender, app_data, user_data) -> None:
        self.apply_filter(user_data)
        self.set_tab("events")

    # ================================================================ test hooks ====
    def snapshot(self) -> dict[str, Any]:
        """The state a test can check from outside (see busted_gui.hooks)."""
        s = self._status
        shown = []
        for i in range(self.visible_rows):
            uid = self._row_uid[i]
            if uid is None or not self._row_shown[i]:
                continue
            event = self._event(uid)
            if event is not None:
                shown.append({"uid": uid, "seq": event.get("seq"), "cells": row_cells(event)})
        frame_ms = sorted(self.frame_times)
        # The primary window sits at the viewport's origin: positions are pixels.
        (tx, ty), (tw, th) = dpg.get_item_pos("table_area"), dpg.get_item_rect_size("table_area")
        return {
            "time": time.time(),
            "frame": self.frame_count,
            "frame_ms_p50": 1000 * frame_ms[len(frame_ms) // 2] if frame_ms else None,
            "state": s.state,
            "message": s.message,
            "hint": s.hint,
            "endpoint": s.endpoint,
            "received": s.received,
            "missed": s.missed,
            "overflow": s.overflow,
            "daemon_stats": s.daemon_stats,
            "total": self.store.total,
            "stored": self.store.stored,
            "view_len": self._view_len(),
            "visible_rows": self.visible_rows,
            "table_rect": [int(tx), int(ty), int(tw), int(th)],
            "row_pitch": self.row_pitch,
            "first_row_y": self.first_row_y,
            "areas": {name: [*map(int, dpg.get_item_pos(name)),
                             *map(int, dpg.get_item_rect_size(name))]
                      for name in ("providers_area", "processes_area", "detail")},
            "rows": shown,
            "filter": self.store.filter.__dict__,
            "paused": self.paused,
            "typing": self._typing(),
            "follow": self.follow,
            "selected": self.selected,
            "tab": self.tab,
            "providers": sorted(self.store.providers),
            "screenshots": self._screenshots,
            "seqs": [e.get("seq") for e in (self.store.get(u) for u in self.store.view()) if e]
            [-2000:],
        }

    def execute(self, command: dict[str, Any]) -> None:
        cmd = command.get("cmd")
        if cmd == "filter":
            fields = {k: v for k, v in command.items() if k in Filter.__dataclass_fields__}
            self.apply_filter(Filter(**fields))
        elif cmd == "clear_filter":
            self.clear_filter()
        elif cmd in ("pause", "resume"):
            self.toggle_pause(cmd == "pause")
        elif cmd == "select":
            view = self._view()
            match = command.get("match") or {}
            if match:
                # The newest event whose fields have these values.
                for uid in reversed(view):
                    event = self._event(uid)
                    if event and all(event.get(k) == v for k, v in match.items()):
                        self.select_uid(uid)
                        break
            elif view:
                self.select_uid(view[int(command.get("position", -1))])
            if command.get("reveal") and self.selected is not None:
                pos = bisect.bisect_left(view, self.selected)
                if not self.top <= pos < self.top + self.visible_rows:
                    self.scroll_to(pos - self.visible_rows // 2)
        elif cmd == "tab":
            self.set_tab(command["name"])
        elif cmd == "help":
            self.toggle_help(bool(command.get("show", True)))
        elif cmd == "screenshot":
            # Taken at the end of frame(), like the hooks' snapshot (see _take_screenshot).
            self._pending_shot = str(command["path"])
        elif cmd == "quit":
            self.quit_requested = True
        else:
            raise ValueError(f"unknown test command {cmd!r}")


def _daemon_summary(stats: dict[str, Any]) -> str:
    """ "5/5 workers · up 2 h 03 min · 1 restart" from the daemon's stats message."""
    workers = stats.get("workers") or {}
    running = sum(1 for w in workers.values() if isinstance(w, dict)
                  and w.get("state") == "running")
    restarts = sum(int(w.get("restarts") or 0) for w in workers.values() if isinstance(w, dict))
    parts = [f"{running}/{len(workers)} workers"] if workers else []
    uptime = float(stats.get("uptime_s") or 0)
    if uptime:
        hours, rest = divmod(int(uptime), 3600)
        parts.append(f"up {hours} h {rest // 60:02d} min" if hours else f"up {rest // 60} min")
    if restarts:
        parts.append(f"{restarts} restart{'s' if restarts > 1 else ''}")
    return "   ·   ".join(parts)


def _count(n: int, color: theme.RGBA) -> None:
    """A count cell: coloured when there is something, dim when zero."""
    dpg.add_text(human_count(n), color=color if n else theme.FAINT)


def _bind_font(item: Any, font: Any) -> None:
    """Bind a font if one was loaded (0 means Dear PyGui's built-in font)."""
    if font:
        dpg.bind_item_font(item, font)


def _ago(now: float, then: float) -> str:
    if not then:
        return "—"
    delta = max(0.0, now - then)
    if delta < 60:
        return f"{delta:.0f} s ago"
    if delta < 3600:
        return f"{delta / 60:.0f} min ago"
    return f"{delta / 3600:.1f} h ago"


def run(
    source: Source,
    max_events: int = DEFAULT_MAX_EVENTS,
    title: str = "Busted",
    width: int = 1280,
    height: int = 800,
    vsync: bool = True,
    duration_s: float | None = None,
    on_frame=None,
) -> Dashboard:
    """Open the window and run until it is closed (or ``duration_s`` passed)."""
    # The stream thread decodes batches while this thread renders; a shorter switch
    # interval than CPython's 5 ms gets the render loop the interpreter back sooner.
    sys.setswitchinterval(0.001)
    hooks = TestHooks.from_env()
    dashboard = Dashboard(source, max_events=max_events, title=title, hooks=hooks)
    dpg.create_context()
    try:
        # Callbacks run on this thread, between frames: the model needs no locks.
        dpg.configure_app(manual_callback_management=True)
        dpg.create_viewport(title=title, width=width, height=height, vsync=vsync,
                            clear_color=theme.BG)
        dashboard.build()
        dpg.setup_dearpygui()
        dpg.show_viewport()
        source.start()
        started = time.monotonic()
        while dpg.is_dearpygui_running() and not dashboard.quit_requested:
            dashboard.frame()
            if on_frame is not None:
                on_frame(dashboard)
            before = time.perf_counter()
            dpg.render_dearpygui_frame()
            dashboard.render_times.append(time.perf_counter() - before)
            jobs = dpg.get_callback_queue()
            if jobs:
                dpg.run_callbacks(jobs)
            if duration_s is not None and time.monotonic() - started >= duration_s:
                break
    finally:
        source.stop()
        dpg.destroy_context()
    return dashboard
