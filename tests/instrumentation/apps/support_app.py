"""A support bot: an OpenAI-SDK application with no telemetry setup (run under lqo-instrument).

It says who each request is for the OpenTelemetry way, in baggage, where it knows: as a web
framework's server instrumentation does with a request's ``baggage`` header (here extracted by
hand, with the default propagators), or in its own code. One request also names its end user to
OpenAI (``safety_identifier``). At the end, a user's feedback on an answer, by its response id.
"""

import openai
from opentelemetry import baggage, context, propagate

from lqo.instrumentation.httpx import record_evaluation

client = openai.OpenAI(max_retries=0)
ASK = {"model": "gpt-4", "messages": [{"role": "user", "content": "Say this is a test"}]}

# A request from the gateway in front, for user u-ann in conversation conv-1: two model calls.
token = context.attach(propagate.extract({"baggage": "user.id=u-ann,gen_ai.conversation.id=conv-1"}))
try:
    first = client.chat.completions.create(**ASK)
    client.chat.completions.create(**ASK)
finally:
    context.detach(token)

# The app's own code names the user and the thread (a chat thread id becomes the conversation).
token = context.attach(baggage.set_baggage("session.id", "thread-9", baggage.set_baggage("user.id", "u-bob")))
try:
    client.chat.completions.create(**ASK)
finally:
    context.detach(token)

# No baggage; the request itself names its end user.
client.chat.completions.create(**ASK, safety_identifier="hashed-cy")
# And one call nobody named.
client.chat.completions.create(**ASK)

# Later, ann does not like her first answer: the app kept its id.
record_evaluation("user_feedback", label="thumbs_down", score=0.0, response_id=first.id)
print("done")
