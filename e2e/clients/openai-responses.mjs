// openai: the Responses API, streamed with the SDK's helper
// (responses.stream), which also assembles the final response.
import OpenAI from 'openai';
import { main, prompt } from './lib/run.mjs';

await main('openai-responses', 'openai', async (app) => {
	const client = new OpenAI({ apiKey: 'sk-test', baseURL: `${app.base}/v1` });
	const stream = client.responses.stream({ model: 'gpt-4.1-mini', input: prompt });
	for await (const event of stream) {
		if (event.type === 'response.output_text.delta') app.token(event.delta);
	}
	const response = await stream.finalResponse();
	app.final(response.output_text);
	app.done();
});
