"""An application calling Gemini's REST API with plain httpx, the API key in the query string
(as the REST docs and LiteLLM do), and no telemetry code (used under lqo-instrument)."""

import os

import httpx

url = f"{os.environ['GEMINI_BASE_URL']}/v1beta/models/gemini-2.5-flash:generateContent"
reply = httpx.post(url, params={"key": os.environ["GEMINI_API_KEY"]},
                   json={"contents": [{"role": "user", "parts": [{"text": "Say this is a test"}]}]})
print(reply.json()["candidates"][0]["content"]["parts"][0]["text"])
