"""The conversation's lifecycle as a ``transitions`` machine: where a patient is, and what
moving on does.

| trigger | from | to | callbacks |
|---|---|---|---|
| ``ask`` | new, menu, asking, follow_up, outcome | asking | set the pending question |
| ``recheck`` | asking | follow_up | set the re-check question |
| ``conclude`` | new, menu, asking, follow_up, outcome | outcome | clear the question, close |
| ``greet`` | new, menu | menu | |
| ``to_menu`` | new, menu, asking, follow_up, outcome | menu | record an abandoned checklist |
| ``opt_out`` | any | opted_out | record an abandoned checklist |
| ``opt_in`` | opted_out | menu | |

* ``new``: never texted, or the session expired.
* ``menu``: no checklist running and no outcome to talk about (after "menu", a greeting).
* ``asking``: a checklist question is pending (``Session.at`` names it; the order of questions
  is flow data, ``Engine.next_question``).
* ``follow_up``: the re-check question sent after a SOON outcome is pending.
* ``outcome``: the conversation has its tier; "ok", "thanks" get a short close.
* ``opted_out``: STOP; only START (or a red flag, recorded silently) is heard.

The machine is built once (``model=None``); its models are ``Slot``s, each attached once and
lent to one message's turn at a time (six states: the cost does not grow with flows or
questions, and no model is added or removed per message). Callbacks are small functions of the
session; the state is read with ``turn.is_asking()`` and the like, never by comparing strings.
"""

from __future__ import annotations

from typing import Any, Protocol

from transitions import EventData, Machine

from .session import ASKING, FOLLOW_UP, MENU, NEW, OPTED_OUT, OUTCOME, Session

STATES = (NEW, MENU, ASKING, FOLLOW_UP, OUTCOME, OPTED_OUT)
TALKING = [NEW, MENU, ASKING, FOLLOW_UP, OUTCOME]


class Model(Protocol):
    session: Session

    def abandon_if_in_progress(self, why: str) -> None: ...


# -- callbacks: one small job each
def set_pending(event: EventData) -> None:
    """The question now pending (``at="fever:temperature"``)."""
    event.model.session.at = event.kwargs["at"]


def clear_pending(event: EventData) -> None:
    event.model.session.at = ""


def close_conversation(event: EventData) -> None:
    """An outcome closes the conversation: a later symptom starts a new one."""
    conv = event.model.session.conv
    if conv is not None:
        conv.done = True


def abandon_open_checklist(event: EventData) -> None:
    """Leaving a checklist half answered (STOP, "menu") is recorded for the care team."""
    why = event.kwargs.get("why")
    if why:
        event.model.abandon_if_in_progress(why)


def forget_conversation(event: EventData) -> None:
    """ "menu": the patient starts again; nothing of the left conversation carries over."""
    if event.kwargs.get("forget"):
        event.model.session.conv = None


def build() -> Machine:
    machine = Machine(model=None, states=list(STATES), initial=None, auto_transitions=False,
                      send_event=True, model_attribute="state")
    add = machine.add_transition
    add("ask", TALKING, ASKING, before=[set_pending])
    add("recheck", ASKING, FOLLOW_UP, before=[set_pending])
    add("conclude", TALKING, OUTCOME, after=[clear_pending, close_conversation])
    add("greet", [NEW, MENU], MENU)
    add("to_menu", TALKING, MENU,
        before=[abandon_open_checklist], after=[clear_pending, forget_conversation])
    add("opt_out", [*TALKING, OPTED_OUT], OPTED_OUT,
        before=[abandon_open_checklist], after=[clear_pending])
    add("opt_in", OPTED_OUT, MENU)
    return machine


class Slot:
    """The machine's model: attached to the machine once (``add_model`` adds the ``is_<state>``
    tests and the triggers to it, which cost more than the rest of a message's lifecycle
    work), then lent to one turn at a time. Its ``state`` and ``session`` are the turn's."""

    def __init__(self) -> None:
        self.turn: Any = None

    @property
    def session(self) -> Session:
        return self.turn.session

    @property
    def state(self) -> str:
        return self.turn.session.state if self.turn is not None else NEW

    @state.setter
    def state(self, value: str) -> None:
        if self.turn is not None:  # add_model sets the initial state before any turn
            self.turn.session.state = value

    def abandon_if_in_progress(self, why: str) -> None:
        self.turn.abandon_if_in_progress(why)


def _free_slots(machine: Machine) -> list[Slot]:
    slots = getattr(machine, "triage_free_slots", None)
    if slots is None:
        slots = machine.triage_free_slots = []
    return slots


class Attached:
    """``with Attached(machine, turn) as lifecycle:`` a slot of the machine is the turn's for
    one message (``lifecycle.is_asking()``, ``lifecycle.trigger("ask", at=...)``). Slots are
    kept for the next message: as many as messages ever handled at once in this process (one
    per gunicorn sync worker), never one per message or per thread."""

    def __init__(self, machine: Machine, model: Any):
        self.machine = machine
        self.model = model
        self.slot: Slot | None = None

    def __enter__(self) -> Slot:
        free = _free_slots(self.machine)
        try:
            slot = free.pop()  # atomic under the GIL: two threads never share a slot
        except IndexError:
            slot = Slot()
            self.machine.add_model(slot, initial=NEW)
        slot.turn = self.model
        self.slot = slot
        return slot

    def __exit__(self, *exc: object) -> None:
        slot, self.slot = self.slot, None
        if slot is not None:
            if getattr(self.model, "lifecycle", None) is slot:
                self.model.lifecycle = None  # used after the message: an error, not NEW
            slot.turn = None
            _free_slots(self.machine).append(slot)
