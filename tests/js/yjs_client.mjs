// A stock y-websocket WebsocketProvider under Node (WebSocket from the `ws` package), driven over
// stdin/stdout with one JSON object per line, so that a pytest test can make it type alongside Python
// clients and read back its document.
//
//   in:  {"id": 1, "cmd": "open", "url": "ws://127.0.0.1:8000/yjs", "room": "K7QF2M", "token": "...",
//         "name": "node", "connect": true}
//   out: {"id": 1, "ok": true, ...}            one answer per command, in order
//        {"event": "status", "status": "connected"}   unsolicited provider events
//
// Commands: open, connect, disconnect, insert {index, text}, type {chars, seed, interval_ms},
// awareness {field, value}, state, wait {contains, synced, status, timeout_ms}, quit.
import { createInterface } from 'node:readline'
import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'
import WebSocket from 'ws'

const TEXT_NAME = 'content' // the shared text relay's whole-document view reads

let doc = null
let text = null
let provider = null

const emit = (message) => process.stdout.write(JSON.stringify(message) + '\n')
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

// A small seeded generator (mulberry32), so a failing run can be replayed with its seed.
function random (seed) {
  let state = seed >>> 0
  return () => {
    state = (state + 0x6D2B79F5) >>> 0
    let t = state
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

// Y.Text indexes are UTF-16 code units; pick a random code point boundary so that an insertion never
// lands between the two halves of a surrogate pair.
function randomBoundary (next) {
  const points = Array.from(text.toString())
  const cut = Math.floor(next() * (points.length + 1))
  return points.slice(0, cut).join('').length
}

function snapshot () {
  const awareness = []
  for (const [clientID, state] of provider.awareness.getStates()) {
    awareness.push({ client_id: clientID, state })
  }
  return {
    text: text.toString(),
    synced: provider.synced,
    connected: provider.wsconnected,
    client_id: doc.clientID,
    awareness
  }
}

const commands = {
  open ({ url, room, token, name, connect = true }) {
    doc = new Y.Doc()
    text = doc.getText(TEXT_NAME)
    provider = new WebsocketProvider(url, room, doc, {
      params: { token },
      WebSocketPolyfill: WebSocket,
      connect,
      disableBc: true
    })
    provider.awareness.setLocalStateField('user', { name, color: '#2e86ab' })
    provider.on('status', ({ status }) => emit({ event: 'status', status }))
    provider.on('sync', (synced) => emit({ event: 'sync', synced }))
    provider.on('closed', ({ code, reason }) => emit({ event: 'closed', code, reason }))
    provider.on('connection-close', (event) => {
      if (event) emit({ event: 'connection-close', code: event.code, reason: event.reason })
    })
    return { client_id: doc.clientID }
  },
  connect () {
    provider.connect()
    return {}
  },
  disconnect () {
    provider.disconnect()
    return {}
  },
  insert ({ index, text: chars }) {
    text.insert(index, chars)
    return { text: text.toString() }
  },
  async type ({ chars, seed = 1, interval_ms: interval = 0 }) {
    const next = random(seed)
    for (const char of chars) {
      text.insert(randomBoundary(next), char)
      if (interval) await sleep(interval)
    }
    return { text: text.toString() }
  },
  awareness ({ field, value }) {
    provider.awareness.setLocalStateField(field, value)
    return {}
  },
  state () {
    return snapshot()
  },
  async wait ({ contains = [], synced = null, connected = null, timeout_ms: timeout = 20000 }) {
    const deadline = Date.now() + timeout
    for (;;) {
      const current = text.toString()
      const ok = contains.every((part) => current.includes(part)) &&
        (synced === null || provider.synced === synced) &&
        (connected === null || provider.wsconnected === connected)
      if (ok) return snapshot()
      if (Date.now() > deadline) {
        throw new Error(`timed out after ${timeout} ms; text ${JSON.stringify(current.slice(0, 200))}, ` +
          `synced ${provider.synced}, connected ${provider.wsconnected}`)
      }
      await sleep(20)
    }
  },
  quit () {
    if (provider) provider.destroy()
    setTimeout(() => process.exit(0), 50)
    return {}
  }
}

// Commands run one at a time, in the order they arrive (a `type` finishes before the next command).
let queue = Promise.resolve()
createInterface({ input: process.stdin }).on('line', (line) => {
  if (!line.trim()) return
  queue = queue.then(async () => {
    let request
    try {
      request = JSON.parse(line)
      const handler = commands[request.cmd]
      if (!handler) throw new Error(`unknown command ${JSON.stringify(request.cmd)}`)
      if (request.cmd !== 'open' && !provider) throw new Error('send "open" first')
      emit({ id: request.id, ok: true, ...(await handler(request)) })
    } catch (error) {
      emit({ id: request ? request.id : null, ok: false, error: String(error && error.message) })
    }
  })
}).on('close', () => {
  // stdin closed (the test ended or died): finish what was asked, then leave.
  queue.then(() => {
    if (provider) provider.destroy()
    process.exit(0)
  })
})
emit({ event: 'ready' })
