"""The events tab: filter bar, the virtual events table and the detail panel.

Part of :class:`busted_gui.app.Dashboard` (a mixin). The table is *virtual*: a fixed
pool of rows (as many as fit) whose cells are rewritten from the visible slice of the
filtered view. Creating a table row costs ~43 µs (shared/measurements.md), so a table
that grows and shrinks with 5,000 events/s would eat the frame; rewriting the visible
rows costs about a millisecond whatever the rate. Scrolling is ours too (wheel,
scrollbar, keys); following the newest events stops as soon as the user scrolls up.
"""

from __future__ import annotations

import time
from typing import Any

import dearpygui.dearpygui as dpg

from busted_gui import detail, theme
from busted_gui.model import (
    COLUMNS,
    decision_of,
    format_time,
    process_key,
    provider_of,
    row_cells,
    timestamp_of,
)
from busted_gui.stream import PROBLEM_STATES, STALE

MAX_ROWS = 80  # the row pool: enough for a tall window
ROW_HEIGHT = 23  # minimum; the drawn pitch is measured (_measure_rows)
DETAIL_WIDTH = 350  # at 1280 px; the panel takes ~28% of the window (_fit_detail)
DETAIL_MIN, DETAIL_MAX = 300, 480
ALL = "All"

# Column weights of the events table (stretch: they share the width in these ratios).
_WEIGHTS = (0.66, 1.1, 0.95, 1.4, 1.4, 1.08, 0.64, 0.55, 1.15, 0.68)


class EventsViewMixin:
    """Builds and updates the events tab."""

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
            theme.bind_font(t, self.fonts.small)
            return dpg.add_combo([ALL], default_value=ALL, width=width, callback=self._on_filter)

    def _build_table(self) -> None:
        with dpg.table(
            tag="events_table", header_row=True, row_background=False, borders_innerV=False,
            borders_outerH=False, borders_innerH=True, policy=dpg.mvTable_SizingStretchProp,
            resizable=True, width=-20, no_host_extendX=True,
        ):
            theme.bind_font("events_table", self.fonts.table)
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
                    theme.bind_font(cells[6], self.fonts.table_bold)
                self._rows.append(row)
                self._cells.append(cells)
                self._row_shown[i] = i < 1

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
        self._fit_detail()
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

    def _fit_detail(self) -> None:
        """Give the detail panel a share of the window's width (the table the rest)."""
        width = dpg.get_viewport_client_width()
        wanted = int(min(DETAIL_MAX, max(DETAIL_MIN, width * 0.28)))
        if abs(wanted - self.detail_width) < 8:
            return
        self.detail_width = wanted
        if self.show_detail:
            dpg.configure_item("table_area", width=-wanted - 8)
        # The filter bar is one line: narrow windows get narrower fields.
        narrow = width < 1200
        for key, wide, small in (("search", 200, 110), ("f_provider", 118, 96),
                                 ("f_class", 126, 104), ("f_process", 118, 96)):
            dpg.configure_item(self._ids[key], width=small if narrow else wide)
        self._render_detail()

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
        wrap = self.detail_width - 40
        with dpg.group(parent=body):
            with dpg.group(horizontal=True):
                decision = decision_of(event) or "—"
                t = dpg.add_text(decision.upper(), color=theme.decision_color(decision))
                theme.bind_font(t, self.fonts.big)
                with dpg.group():
                    dpg.add_spacer(height=2)
                    t = dpg.add_text(
                        f"{provider_of(event) or event.get('event_type', '')}  "
                        f"{event.get('llm_model') or event.get('mcp_tool') or ''}",
                        color=theme.provider_color(provider_of(event)),
                    )
                    theme.bind_font(t, self.fonts.bold)
                    dpg.add_text(
                        f"{format_time(timestamp_of(event))}   {process_key(event)}",
                        color=theme.DIM,
                    )
            for section in detail.sections(event):
                dpg.add_spacer(height=2)
                t = dpg.add_text(section.title.upper(), color=theme.ACCENT)
                theme.bind_font(t, self.fonts.small)
                dpg.add_separator()
                if section.text:
                    t = dpg.add_text(section.text, wrap=wrap)
                    if section.mono:
                        theme.bind_font(t, self.fonts.mono)
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
                            theme.bind_font(t, self.fonts.small)
                            color = theme.TEXT
                            if section.title == "Policy" and label == "decision":
                                color = theme.decision_color(value)
                            elif label == "PII":
                                color = theme.PII
                            t = dpg.add_text(value, wrap=wrap - label_w - 12, color=color)
                            if section.mono:
                                theme.bind_font(t, self.fonts.mono)

