"""The top of the window: status bar, problem banner, rate plot, counters, help.

Part of :class:`busted_gui.app.Dashboard` (a mixin: it reads the dashboard's store,
status and fonts). Updated a few times a second, not every frame.
"""

from __future__ import annotations

from typing import Any

import dearpygui.dearpygui as dpg

from busted_gui import theme
from busted_gui.model import blind_processes, human_count
from busted_gui.stream import PROBLEM_STATES, STALE

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

CARD_HELP = {
    "total": "Events received since the window opened (all kinds, not only LLM calls).",
    "active": "Processes with an event in the last minute.",
    "pii": "Events in which personal data or secrets were detected.",
    "missed": "Events this window never got: gaps in the daemon's sequence numbers (a slow "
    "subscriber, or drops between the daemon's workers) plus events dropped because the "
    "window fell behind.",
    "dropped": "Events the daemon's workers could not hand on (see `busted status`).",
    "lost": "Kernel ring-buffer records lost, plus events lost when a worker crashed.",
}


class HeaderMixin:
    """Builds and updates the status bar, banner, header and help overlay."""

    def _build_top_bar(self) -> None:
        with dpg.table(header_row=False, borders_innerV=False, policy=dpg.mvTable_SizingFixedFit):
            dpg.add_table_column(width_stretch=True)
            dpg.add_table_column(width_fixed=True)
            with dpg.table_row():
                with dpg.group(horizontal=True):
                    title = dpg.add_text("BUSTED", color=theme.ACCENT)
                    theme.bind_font(title, self.fonts.big)
                    with dpg.group():
                        dpg.add_spacer(height=4)
                        with dpg.group(horizontal=True):
                            self._ids["state"] = dpg.add_text("● CONNECTING", color=theme.AUDIT)
                            theme.bind_font(self._ids["state"], self.fonts.bold)
                            self._ids["rate"] = dpg.add_text("")
                            self._ids["blind"] = dpg.add_text("", color=theme.DENY)
                            theme.bind_font(self._ids["blind"], self.fonts.bold)
                            with dpg.tooltip(self._ids["blind"]):
                                self._ids["blind_tip"] = dpg.add_text("", wrap=520)
                            self._ids["endpoint"] = dpg.add_text("", color=theme.FAINT)
                with dpg.group(horizontal=True):
                    self._ids["pause"] = dpg.add_button(
                        label="Pause", width=110, callback=lambda: self.toggle_pause()
                    )
                    dpg.add_button(label="?  Help", width=80, callback=lambda: self.toggle_help())

    def _build_banner(self) -> None:
        with dpg.child_window(height=58, tag="banner", show=False, no_scrollbar=True):
            self._ids["banner_msg"] = dpg.add_text("", color=theme.TEXT)
            theme.bind_font(self._ids["banner_msg"], self.fonts.bold)
            self._ids["banner_hint"] = dpg.add_text("", color=(255, 220, 160, 255))
            theme.bind_font(self._ids["banner_hint"], self.fonts.mono)

    def _build_header(self) -> None:
        card_w, gap = 112, 8
        cards_w = 5 * card_w + 4 * gap
        with dpg.group(horizontal=True):
            with dpg.child_window(width=-cards_w - gap, height=132, no_scrollbar=True):
                with dpg.group(horizontal=True):
                    t = dpg.add_text("Events/s", color=theme.DIM)
                    theme.bind_font(t, self.fonts.small)
                    self._ids["plot_title"] = dpg.add_text("· last 5 minutes", color=theme.FAINT)
                    theme.bind_font(self._ids["plot_title"], self.fonts.small)
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
            theme.bind_font(t, self.fonts.small)
            color = {"allow": theme.ALLOW, "audit": theme.AUDIT, "deny": theme.DENY,
                     "pii": theme.PII}.get(key, theme.TEXT)
            value = dpg.add_text("0", color=color)
            theme.bind_font(value, self.fonts.big)
        dpg.bind_item_theme(card, self._themes["card"])
        self._cards[key] = value
        if key in CARD_HELP:
            with dpg.tooltip(card):
                dpg.add_text(CARD_HELP[key], wrap=320)

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
                        theme.bind_font(t, self.fonts.bold)
                        dpg.add_text(what)
            dpg.add_spacer(height=6)
            dpg.add_text("Decisions: ", color=theme.DIM)
            with dpg.group(horizontal=True):
                dpg.add_text("deny", color=theme.DENY)
                dpg.add_text("audit", color=theme.AUDIT)
                dpg.add_text("allow", color=theme.ALLOW)
                dpg.add_text("   PII", color=theme.PII)
                dpg.add_text("   (⇢ = streaming response)", color=theme.DIM)

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
        blind = blind_processes(s.daemon_stats, self.store.blind)
        dpg.set_value(self._ids["blind"], f"   ⚠ {len(blind)} blind" if blind else "")
        dpg.set_value(self._ids["blind_tip"], "TLS going out that busted cannot read "
                      "(busted status, busted doctor --coverage):\n" + "\n".join(blind))
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
    parts += _sink_troubles(workers.get("output") or {})
    return "   ·   ".join(parts)


def _sink_troubles(output: dict[str, Any]) -> list[str]:
    """ "webhook retrying (1.2k spooled)": the --output sinks that are behind or failing."""
    out = []
    for sink in (output.get("sinks") or {}).values():
        if not isinstance(sink, dict):
            continue
        state, spooled = sink.get("state", "sending"), int(sink.get("spooled_events") or 0)
        if state != "sending" or spooled > 1000:
            out.append(f"{sink.get('kind', 'sink')} {state} ({human_count(spooled)} spooled)")
    return out
