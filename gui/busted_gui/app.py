"""The Dear PyGui window of ``busted ui`` and its render loop.

The render loop owns every Dear PyGui call and never touches a socket: each frame it
drains a bounded number of events from the source's inbox (filled by the stream or demo
thread) into the :class:`~busted_gui.model.EventStore`, then updates only what changed.
The views live in their own modules (mixins of :class:`Dashboard`): the header in
:mod:`~busted_gui.header`, the events table and detail panel in
:mod:`~busted_gui.events_view`, providers and processes in
:mod:`~busted_gui.summary_views`. This module holds the state, the actions (shared by
mouse, keys and test hooks) and the loop.
"""

from __future__ import annotations

import bisect
import gc
import logging
import sys
import time
from collections import deque
from typing import Any, Protocol

import dearpygui.dearpygui as dpg

from busted_gui import theme
from busted_gui.events_view import ALL, DETAIL_WIDTH, MAX_ROWS, EventsViewMixin
from busted_gui.header import HeaderMixin
from busted_gui.hooks import TestHooks
from busted_gui.model import COLUMNS, DEFAULT_MAX_EVENTS, EventStore, Filter, row_cells
from busted_gui.stream import ConnectionStatus
from busted_gui.summary_views import SummaryViewsMixin

log = logging.getLogger("busted.ui")

# Events moved from the inbox to the store per frame: in chunks, until this much time
# went by. Beyond what fits, the inbox overflows (counted as missed) rather than the
# frame rate collapsing: a window that freezes under a burst is worse than one that
# says it skipped events.
INGEST_CHUNK = 64
INGEST_BUDGET_S = 0.008
MAX_FPS = 60  # with vsync on: also the cap where the display does not sync
SLOW_VIEWS_INTERVAL_S = 1.0  # providers / processes tables and drop-down choices
# Dear PyGui 2.x maps mvKey_Prior / mvKey_Next to stale codes (266/267) whose handlers
# fire on every frame; these are Dear ImGui's own PageUp / PageDown key numbers.
KEY_PAGE_UP = 517
KEY_PAGE_DOWN = 518


class EventFeed(Protocol):
    """What the dashboard needs from the live stream or the demo generator."""

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def drain(self, max_events: int) -> list[dict[str, Any]]: ...

    def status(self) -> ConnectionStatus: ...


class Dashboard(HeaderMixin, EventsViewMixin, SummaryViewsMixin):
    """Builds the window and updates it once per frame."""

    def __init__(
        self,
        source: EventFeed,
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
        self.detail_width = DETAIL_WIDTH
        self.tab = "events"
        self.group_by = "process"
        self.quit_requested = False
        self._modifier_frame: dict[str, int] = {}
        self._chorded: list[str] = []

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
            # Modifiers are remembered for a frame: a quick Ctrl+F can reach Dear ImGui
            # as "Ctrl down" in one frame and "F down, Ctrl up" in the next.
            for key in (dpg.mvKey_LControl, dpg.mvKey_RControl):
                dpg.add_key_down_handler(key, callback=lambda: self._saw_modifier("ctrl"))
            for key in (dpg.mvKey_LShift, dpg.mvKey_RShift):
                dpg.add_key_down_handler(key, callback=lambda: self._saw_modifier("shift"))

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
        dpg.configure_item("table_area", width=-self.detail_width - 8 if self.show_detail else -1)

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

    def _saw_modifier(self, name: str) -> None:
        self._modifier_frame[name] = self.frame_count

    def _modifier(self, name: str) -> bool:
        return self.frame_count - self._modifier_frame.get(name, -10) <= 2

    # Keys whose meaning depends on a modifier are decided at the start of the next
    # frame, once every handler of the frame they came in (the modifier's too) ran.
    def _on_f(self) -> None:
        self._chorded.append("f")

    def _on_slash(self) -> None:
        self._chorded.append("slash")

    def _on_q(self) -> None:
        self._chorded.append("q")

    def _resolve_chords(self) -> None:
        keys, self._chorded = self._chorded, []
        for key in keys:
            if key == "f" and self._modifier("ctrl"):
                dpg.focus_item(self._ids["search"])
            elif key == "f":
                self.set_follow(not self.follow)
            elif key == "slash" and self._modifier("shift"):
                self.toggle_help()
            elif key == "slash":
                self.set_tab("events")
                dpg.focus_item(self._ids["search"])
            elif key == "q" and self._modifier("ctrl"):
                self.quit_requested = True

    # ==================================================================== frame =====
    def _ingest(self) -> None:
        deadline = time.perf_counter() + INGEST_BUDGET_S
        while True:
            events = self.source.drain(INGEST_CHUNK)
            if events:
                self.store.add_many(events)
            if len(events) < INGEST_CHUNK or time.perf_counter() >= deadline:
                return

    def frame(self) -> None:
        """Everything the dashboard does between two rendered frames."""
        start = time.perf_counter()
        self.frame_times.append(start - self._last_frame)
        self._last_frame = start
        self.frame_count += 1
        now = self.clock()

        if self._chorded:
            self._resolve_chords()
        if self.hooks is not None:
            self.hooks.run_commands(self.execute)
        self._ingest()
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
            "blind_label": dpg.get_value(self._ids["blind"]),
            "processes_rows": self.processes_shown() if self.tab == "processes" else [],
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


def run(
    source: EventFeed,
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
        # Events are acyclic dicts freed by reference counting; at thousands a second
        # the cycle collector's default pace (every 700 allocations) only adds pauses.
        # Startup objects are frozen out of its way, and it runs less often.
        gc.collect()
        gc.freeze()
        gc.set_threshold(10_000, 20, 20)
        source.start()
        started = time.monotonic()
        frame_budget = 1 / MAX_FPS if vsync else 0.0
        while dpg.is_dearpygui_running() and not dashboard.quit_requested:
            frame_start = time.perf_counter()
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
            # Where vsync does not hold the loop back (Xvfb, some remote X servers), do
            # not spin a core redrawing faster than a screen refreshes.
            spare = frame_budget - (time.perf_counter() - frame_start)
            if spare > 0.001:
                time.sleep(spare)
    finally:
        source.stop()
        dpg.destroy_context()
    return dashboard
