// eventsource: the WHATWG EventSource for Node, on a GET stream of
// Anthropic-style named events; the script closes it at message_stop, as
// an application does.
import { EventSource } from 'eventsource';
import { main } from './lib/run.mjs';

const maxErrors = 3;

await main('eventsource', 'eventsource', (app) =>
	new Promise((resolve) => {
		const es = new EventSource(`${app.base}/v1/messages/events`);
		let errors = 0;
		es.addEventListener('content_block_delta', (ev) => {
			const data = JSON.parse(ev.data);
			if (data.delta?.type === 'text_delta') app.token(data.delta.text);
		});
		es.addEventListener('message_stop', () => {
			app.done();
			es.close();
			resolve();
		});
		es.onerror = (ev) => {
			app.error(new Error(`EventSource error event: ${ev.message ?? ''} (code ${ev.code ?? ''})`));
			if (++errors >= maxErrors) {
				es.close();
				resolve();
			}
		};
	}),
);
