"""join's wait line tells how long it has waited, again and again: it used
to say "waiting for the mesh (5s)" once and then nothing, however long
the wait (issue 25 item 8)."""

import unittest

from ringmesh import client as C
from ringmesh import protocol as P
from ringmesh.errors import RingmeshError


class WaitLogTest(unittest.TestCase):
    def test_unchanged_wait_is_logged_again_with_its_time(self):
        c = C.Client.__new__(C.Client)  # no node: _call is faked below
        c.WAIT_REPEAT = 0.05
        calls = []

        def fake_call(req, timeout=None):
            calls.append(req)
            if len(calls) < 6:
                import time
                time.sleep(0.03)
                raise RingmeshError(P.CODE_TIMEOUT, "not admitted yet: node is forming: waiting for 2 members")
            return C.Response({"step": 0, "members": ["a", "b"]})

        c._call = fake_call
        with self.assertLogs("ringmesh", level="INFO") as logs:
            c.join(0, timeout=10)
        waits = [r for r in logs.output if "waiting for the mesh" in r]
        # The same reason all along: still logged more than once (each line
        # carries the seconds waited so far).
        self.assertGreaterEqual(len(waits), 2, logs.output)


if __name__ == "__main__":
    unittest.main()
