"""mgrpo learners."""
