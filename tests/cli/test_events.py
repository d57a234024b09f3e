"""Every progress event the library emits has a renderer in the CLI, and an event a display does
not know is an error, not a silently dropped line (a misspelt event kind used to be ignored)."""

import inspect

import pytest

import featcache.events as events
from featcache.cli.distill_cmd import TrainingDisplay
from featcache.cli.events import Display
from featcache.cli.extract_cmd import _Reporter
from featcache.cli.study_display import StudyDisplay

DISPLAYS = (TrainingDisplay, _Reporter, StudyDisplay)


def _event_types():
    return {cls for _, cls in inspect.getmembers(events, inspect.isclass)
            if issubclass(cls, events.Event) and cls is not events.Event}


def test_every_event_has_a_renderer():
    rendered = {t for display in DISPLAYS for t in display.renders}
    assert _event_types() - rendered == set()


def test_every_renderer_exists():
    for display in DISPLAYS:
        for kind, method in display.renders.items():
            assert callable(getattr(display, method, None)), f"{display.__name__} lacks {method} for {kind}"


def test_an_event_a_display_does_not_know_fails():
    class Quiet(Display):
        renders = {}

    with pytest.raises(TypeError, match="cannot render ImagesExtracted"):
        Quiet()(events.ImagesExtracted(1, 2))


def test_a_study_renders_the_stages_events_it_forwards():
    stage_events = {events.ImagesExtracted, events.StatisticsRead, events.ShardsCommitted,
                    events.TrainingStarted, events.TrainingStep, events.EpochDone, events.PretrainStarted,
                    events.PretrainStep, events.PretrainReused}
    assert stage_events <= set(StudyDisplay.renders)
