// Builds the interview page into relay/static (committed, so relay serves it without Node).
// Deterministic: same lockfile + same sources => byte-identical output (CI checks this).
import { build } from 'esbuild'
import { copyFile, mkdir } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const here = dirname(fileURLToPath(import.meta.url))
const out = join(here, '..', 'relay', 'static')

await mkdir(out, { recursive: true })
await build({
  absWorkingDir: here,
  entryPoints: ['src/main.js'],
  outfile: join(out, 'app.js'),
  bundle: true,
  format: 'esm',
  platform: 'browser',
  target: ['es2020', 'chrome100', 'firefox100', 'safari15'],
  minify: true,
  sourcemap: false,
  charset: 'utf8',
  legalComments: 'eof',
  logLevel: 'warning'
})
for (const name of ['index.html', 'app.css']) {
  await copyFile(join(here, 'src', name), join(out, name))
}
