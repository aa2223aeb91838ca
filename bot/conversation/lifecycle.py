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

The machine is built once (``model=None``); each message attaches its turn as the model for the
length of the message (six states: the cost does not grow with flows or questions). Callbacks
are small functions of the session; the state is read with ``turn.is_asking()`` and the like,
never by comparing strings.
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


class Attached:
    """``with Attached(machine, turn):`` the turn is the machine's model for one message."""

    def __init__(self, machine: Machine, model: Any):
        self.machine = machine
        self.model = model

    def __enter__(self) -> Any:
        self.machine.add_model(self.model, initial=self.model.session.state)
        return self.model

    def __exit__(self, *exc: object) -> None:
        self.machine.remove_model(self.model)
