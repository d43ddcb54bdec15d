"""A Pipecat bot behind Twilio's Media Streams protocol, built the way Pipecat's own Twilio
examples build one (FastAPI websocket endpoint, ``parse_telephony_websocket``,
``TwilioFrameSerializer``, ``FastAPIWebsocketTransport``), with pipecat-ai from PyPI unmodified.
Pointed at Dialtone instead of Twilio by two settings only: the agent's ``brain`` is this
websocket, and the serializer's ``base_url`` (its REST API root for the hang-up) is Dialtone's
HTTP address, with the organisation's id as the account SID and an API key as the auth token.

Its services are scripted so it runs with no network: instead of STT → LLM → TTS it plays the
caller's audio back, and after ``--hold`` seconds it ends the pipeline, whereupon Pipecat's
serializer hangs the call up through the REST API (``Status=completed``).

    python3 pipecat_bot.py --port 8765 --api http://127.0.0.1:8080 --account $ORG --key $KEY
    # then the agent's "brain": "ws://127.0.0.1:8765/media-stream"
"""

import argparse
import asyncio

import uvicorn
from fastapi import FastAPI, WebSocket
from pipecat.frames.frames import EndFrame, InputAudioRawFrame, OutputAudioRawFrame
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.runner import PipelineRunner
from pipecat.pipeline.task import PipelineParams, PipelineTask
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.runner.utils import parse_telephony_websocket
from pipecat.serializers.twilio import TwilioFrameSerializer
from pipecat.transports.websocket.fastapi import (
    FastAPIWebsocketParams,
    FastAPIWebsocketTransport,
)


class Echo(FrameProcessor):
    """The scripted 'conversation': the caller's audio, played back."""

    async def process_frame(self, frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if isinstance(frame, InputAudioRawFrame):
            await self.push_frame(
                OutputAudioRawFrame(
                    audio=frame.audio,
                    sample_rate=frame.sample_rate,
                    num_channels=frame.num_channels,
                )
            )
        else:
            await self.push_frame(frame, direction)


def app(api: str, account: str, key: str, hold: float) -> FastAPI:
    server = FastAPI()

    @server.websocket("/media-stream")
    async def media_stream(websocket: WebSocket):
        await websocket.accept()
        _, call_data = await parse_telephony_websocket(websocket)
        start = call_data["body"]
        print(f"start: stream {call_data['stream_id']} call {call_data['call_id']} "
              f"parameters {start}", flush=True)
        serializer = TwilioFrameSerializer(
            stream_sid=call_data["stream_id"],
            call_sid=call_data["call_id"],
            account_sid=account,
            auth_token=key,
            base_url=api,
        )
        transport = FastAPIWebsocketTransport(
            websocket=websocket,
            params=FastAPIWebsocketParams(
                audio_in_enabled=True,
                audio_out_enabled=True,
                add_wav_header=False,
                serializer=serializer,
            ),
        )
        pipeline = Pipeline([transport.input(), Echo(), transport.output()])
        task = PipelineTask(
            pipeline,
            params=PipelineParams(audio_in_sample_rate=8000, audio_out_sample_rate=8000),
        )

        async def end_later():
            await asyncio.sleep(hold)
            print("ending the pipeline: the serializer hangs up", flush=True)
            await task.queue_frame(EndFrame())

        ender = asyncio.create_task(end_later())
        await PipelineRunner(handle_sigint=False).run(task)
        ender.cancel()
        print("pipeline done", flush=True)

    return server


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--api", required=True, help="Dialtone's HTTP address (REST API root)")
    parser.add_argument("--account", required=True, help="the organisation's id (account SID)")
    parser.add_argument("--key", required=True, help="an API key (the auth token)")
    parser.add_argument("--hold", type=float, default=4.0, help="seconds before hanging up")
    args = parser.parse_args()
    uvicorn.run(app(args.api, args.account, args.key, args.hold), host="127.0.0.1", port=args.port,
                log_level="warning")


if __name__ == "__main__":
    main()
