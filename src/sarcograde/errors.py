"""The one exception type that the command line turns into a one-line message and exit code."""


class SarcogradeError(Exception):
    """A problem with the user's input or environment, worth one readable line and no traceback.

    Build the message as "<patient>: <file>: <problem>" where a patient and file are known, so that
    a user of a 300-patient cohort can find the culprit without a debugger.
    """

    def __init__(self, message: str, *, patient: str | None = None, path=None, exit_code: int = 1):
        parts = [str(p) for p in (patient, path) if p not in (None, "")]
        super().__init__(": ".join(parts + [message]))
        self.patient = patient
        self.path = path
        self.problem = message
        self.exit_code = exit_code
