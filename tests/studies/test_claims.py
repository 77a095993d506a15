"""Claims: processes sharing one study folder run each unit once; a dead owner's claim is taken."""

import json
import threading
import time

from tttlab.atomic import owner_tag
from tttlab.studies import grid, open_study, run_units, status
from tttlab.studies.claims import claim, claim_file, claim_owner
from tttlab.studies.executors import follow

UNITS = grid(width=[25, 50, 100], seed=[0, 1])


def test_two_runs_on_one_folder_run_each_unit_once(tmp_path):
    folder = open_study(tmp_path / "study", {"kind": "toy"})
    calls: list[str] = []

    def slow(unit):
        calls.append(unit.id)
        time.sleep(0.05)
        return {"width": unit.settings["width"]}

    args = (folder, UNITS, slow)
    twins = [threading.Thread(target=run_units, args=args, kwargs={"progress": False})
             for _ in range(2)]  # fmt: skip
    for t in twins:
        t.start()
    for t in twins:
        t.join()
    assert sorted(calls) == sorted(u.id for u in UNITS)  # each once, between the two
    assert not status(folder, UNITS).missing
    assert not list((folder / "claims").iterdir())  # every claim removed when its unit ended


def test_a_unit_another_live_process_holds_is_left_to_it_and_shown_running(tmp_path):
    folder = open_study(tmp_path / "study", {"kind": "toy"})
    with claim(folder, UNITS[0].id) as mine:
        assert mine
        report = run_units(folder, UNITS, lambda u: {}, progress=False)
        assert report.claimed == [UNITS[0].id] and len(report.ran) == 5
        assert follow(folder, UNITS).running == {UNITS[0].id: f"claimed by process {owner_tag()}"}
    assert claim_owner(folder, UNITS[0].id) is None


def test_the_claim_of_a_process_that_died_is_taken_over(tmp_path):
    folder = open_study(tmp_path / "study", {"kind": "toy"})
    host = owner_tag().rpartition("-")[0]
    dead = {"owner": f"{host}-999999999", "host": host, "pid": 999999999, "since": 0}
    path = claim_file(folder, UNITS[0].id)
    path.parent.mkdir()
    path.write_text(json.dumps(dead))  # as a SIGKILLed run leaves it
    assert claim_owner(folder, UNITS[0].id) is None
    report = run_units(folder, UNITS, lambda u: {}, progress=False)
    assert UNITS[0].id in report.ran and not path.exists()
