// eventsource-parser: fetch plus EventSourceParserStream, the way SDKs built
// on it read a stream (here Gemini's streamGenerateContent, alt=sse). Its
// onComment hook counts the comments the parser saw.
import { EventSourceParserStream } from 'eventsource-parser/stream';
import { main, prompt } from './lib/run.mjs';

await main('eventsource-parser', 'eventsource-parser', async (app) => {
	const res = await fetch(`${app.base}/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse`, {
		method: 'POST',
		headers: { 'Content-Type': 'application/json', 'x-goog-api-key': 'test-key' },
		body: JSON.stringify({ contents: [{ role: 'user', parts: [{ text: prompt }] }] }),
	});
	if (!res.ok) throw new Error(`HTTP ${res.status}`);
	const events = res.body
		.pipeThrough(new TextDecoderStream())
		.pipeThrough(new EventSourceParserStream({ onComment: () => app.comment() }));
	for await (const ev of events) {
		const chunk = JSON.parse(ev.data);
		const s = (chunk.candidates?.[0]?.content?.parts ?? []).map((p) => p.text ?? '').join('');
		if (s) app.token(s);
	}
	app.done();
});
