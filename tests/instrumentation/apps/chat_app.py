"""An ordinary OpenAI-SDK application with no telemetry code at all (used under lqo-instrument).

It reads OPENAI_BASE_URL / OPENAI_API_KEY from the environment, as any app would.
"""

import openai

client = openai.OpenAI(max_retries=0)
reply = client.chat.completions.create(
    model="gpt-4",
    messages=[{"role": "user", "content": "Say this is a test"}],
    stream=True,
    stream_options={"include_usage": True},
)
print("".join(chunk.choices[0].delta.content or "" for chunk in reply if chunk.choices))
print(client.embeddings.create(model="text-embedding-3-small", input="This is a test").model)
