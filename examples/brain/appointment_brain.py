"""A reference brain for Dialtone's AgentBridge: an appointment-confirmation agent.

It shows where a real brain plugs in its speech-to-text, language model and text-to-speech:
the engine streams the caller's audio and events (speech started/ended, digits, playout done,
machine detection) and the brain answers with what to say (here text for the engine's TTS;
a brain with its own TTS sends PlayAudio instead), transcript lines, the structured result
and when to hang up. This one asks for a key press: 1 confirms, 2 cancels.

usage: appointment_brain.py PROTO_DIR PORT [--crash-after-start]
(grpcio and grpcio-tools from PyPI; scripts/python-env.sh makes a virtualenv with them)
"""

import concurrent.futures
import datetime
import pathlib
import queue
import sys
import tempfile

import grpc

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import dialtone_stubs  # noqa: E402


def main() -> None:
    proto_dir, port = pathlib.Path(sys.argv[1]), int(sys.argv[2])
    crash = "--crash-after-start" in sys.argv[3:]
    out = tempfile.mkdtemp()
    dialtone_stubs.generate(proto_dir, pathlib.Path(out))
    from dialtone.v1 import bridge_pb2, bridge_pb2_grpc, calls_pb2  # noqa: E402

    def now() -> str:
        return datetime.datetime.now(datetime.timezone.utc).isoformat()

    class Brain(bridge_pb2_grpc.AgentBridgeServiceServicer):
        def Converse(self, requests, context):
            replies: "queue.Queue[bridge_pb2.ConverseResponse | None]" = queue.Queue()

            def say(text: str, mark: str) -> None:
                replies.put(bridge_pb2.ConverseResponse(speak=bridge_pb2.Speak(text=text, mark=mark)))

            def listen() -> None:
                answered = False
                for request in requests:
                    event = request.WhichOneof("event")
                    if event == "start":
                        if crash:
                            context.abort(grpc.StatusCode.INTERNAL, "simulated crash")
                        start = request.start
                        when = start.context.fields["appointment"].string_value or "tomorrow"
                        say(f"Hello, this is a reminder of your appointment {when}. "
                            "Press 1 to confirm, or 2 to cancel.", "question")
                    elif event == "dtmf" and not answered and request.dtmf.digit in "12":
                        answered = True
                        confirmed = request.dtmf.digit == "1"
                        replies.put(bridge_pb2.ConverseResponse(transcript=calls_pb2.TranscriptLine(
                            role="caller", text=f"pressed {request.dtmf.digit}", at=now())))
                        result = bridge_pb2.StructuredResult()
                        result.result.update({"confirmed": confirmed})
                        replies.put(bridge_pb2.ConverseResponse(result=result))
                        say("Thank you, see you then. Goodbye." if confirmed
                            else "Your appointment is cancelled. Goodbye.", "bye")
                    elif event == "speech_ended":
                        # A real brain sends the utterance's audio to its speech-to-text here.
                        pass
                    elif event == "playout_done" and request.playout_done.mark == "bye":
                        replies.put(bridge_pb2.ConverseResponse(hang_up=bridge_pb2.HangUp(reason="completed")))
                    elif event == "ended":
                        break
                replies.put(None)

            concurrent.futures.ThreadPoolExecutor(max_workers=1).submit(listen)
            while True:
                reply = replies.get()
                if reply is None:
                    return
                yield reply

    server = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=8))
    bridge_pb2_grpc.add_AgentBridgeServiceServicer_to_server(Brain(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    print(f"brain listening on 127.0.0.1:{port}", flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    main()
