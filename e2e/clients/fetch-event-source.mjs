// @microsoft/fetch-event-source: a POST to an OpenAI-style chat endpoint,
// JSON.parse(ev.data) in onmessage, and the retry pattern of the library's
// README: onopen checks the response, onclose before the end of the answer
// retries, onerror lets anything but a fatal error retry (the POST is sent
// again). After three failures the script gives up.
import { fetchEventSource, EventStreamContentType } from '@microsoft/fetch-event-source';
import { main, prompt } from './lib/run.mjs';

// the library was written for browsers: it watches page visibility and
// schedules retries on window
globalThis.window ??= globalThis;
globalThis.document ??= { hidden: false, addEventListener() {}, removeEventListener() {} };

class RetriableError extends Error {}
class FatalError extends Error {}

const maxFailures = 3;

await main('fetch-event-source', '@microsoft/fetch-event-source', async (app) => {
	let failures = 0;
	let finished = false;
	await fetchEventSource(`${app.base}/v1/chat/completions`, {
		method: 'POST',
		headers: { 'Content-Type': 'application/json', Authorization: 'Bearer sk-test' },
		body: JSON.stringify({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: prompt }], stream: true }),
		openWhenHidden: true,
		async onopen(response) {
			if (response.ok && response.headers.get('content-type')?.startsWith(EventStreamContentType)) {
				return;
			}
			if (response.status >= 400 && response.status < 500 && response.status !== 429) {
				throw new FatalError(`HTTP ${response.status}`);
			}
			throw new RetriableError(`HTTP ${response.status}`);
		},
		onmessage(ev) {
			if (ev.data === '[DONE]') {
				finished = true;
				return;
			}
			const chunk = JSON.parse(ev.data);
			const s = chunk.choices[0]?.delta?.content;
			if (s) app.token(s);
		},
		onclose() {
			if (!finished) throw new RetriableError('stream closed before [DONE]');
		},
		onerror(err) {
			app.error(err);
			if (err instanceof FatalError || ++failures >= maxFailures) throw err;
			// returning nothing retries after the default interval
		},
	});
	if (finished) app.done();
});
