"""A benchmark's figures name the code that ran: a tree that changed while it ran is not called clean."""

from common import provenance


def record(monkeypatch, *trees):
    states = iter(trees)
    monkeypatch.setattr(provenance, "git_revision", lambda repo=provenance.REPO: next(states))
    return provenance.provenance("bench", [])


def test_a_run_on_a_clean_tree_that_stayed_clean_keeps_its_revision(monkeypatch):
    started = record(monkeypatch, ("abc1234", True), ("abc1234", True))
    assert provenance.confirm(started)["clean_tree"] is True


def test_a_run_whose_tree_was_edited_while_it_ran_is_not_clean(monkeypatch):
    confirmed = provenance.confirm(record(monkeypatch, ("abc1234", True), ("abc1234", False)))
    assert confirmed["clean_tree"] is False and confirmed["changed_during_run"] is True


def test_a_run_during_which_head_moved_is_not_clean(monkeypatch):
    confirmed = provenance.confirm(record(monkeypatch, ("abc1234", True), ("def5678", True)))
    assert confirmed["clean_tree"] is False


def test_a_run_that_started_on_a_dirty_tree_stays_dirty(monkeypatch):
    assert provenance.confirm(record(monkeypatch, ("abc1234", False), ("abc1234", True)))["clean_tree"] is False
