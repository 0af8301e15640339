// @google/genai: models.generateContentStream, with the API pointed at the
// test server through httpOptions.baseUrl.
import { GoogleGenAI } from '@google/genai';
import { main, prompt } from './lib/run.mjs';

await main('genai', '@google/genai', async (app) => {
	const ai = new GoogleGenAI({ apiKey: 'test-key', httpOptions: { baseUrl: app.base } });
	const stream = await ai.models.generateContentStream({ model: 'gemini-2.5-flash', contents: prompt });
	for await (const chunk of stream) {
		const s = chunk.text;
		if (s) app.token(s);
	}
	app.done();
});
