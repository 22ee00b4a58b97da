// The interview page: development sign-in, rooms, and a CodeMirror editor bound to the room's shared
// Y.Text ("content") over relay's Yjs endpoint (/yjs/{room_code}) with a stock y-websocket provider.
import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'
import { yCollab, yUndoManagerKeymap } from 'y-codemirror.next'
import { basicSetup } from 'codemirror'
import { Compartment, EditorState } from '@codemirror/state'
import { EditorView, keymap } from '@codemirror/view'
import { indentUnit } from '@codemirror/language'
import { python } from '@codemirror/lang-python'
import { javascript } from '@codemirror/lang-javascript'
import { java } from '@codemirror/lang-java'
import { cpp } from '@codemirror/lang-cpp'
import { go } from '@codemirror/lang-go'
import { rust } from '@codemirror/lang-rust'

// The names every client of a room agrees on: the text is what whole-document clients and
// GET /api/room/{code} see; "meta" holds page settings shared by Yjs clients (the language).
const TEXT_NAME = 'content'
const META_NAME = 'meta'

const LANGUAGES = {
  python: { label: 'Python', extension: () => python(), indent: '    ' },
  javascript: { label: 'JavaScript', extension: () => javascript(), indent: '  ' },
  typescript: { label: 'TypeScript', extension: () => javascript({ typescript: true }), indent: '  ' },
  java: { label: 'Java', extension: () => java(), indent: '    ' },
  cpp: { label: 'C++', extension: () => cpp(), indent: '    ' },
  go: { label: 'Go', extension: () => go(), indent: '\t' },
  rust: { label: 'Rust', extension: () => rust(), indent: '    ' },
  plaintext: { label: 'Plain text', extension: () => [], indent: '    ' }
}
const DEFAULT_LANGUAGE = 'python'

// Distinct, readable on white; a user keeps one colour for the whole session (derived from the id).
const COLOURS = ['#d1495b', '#2e86ab', '#3c9d4e', '#8e44ad', '#e07a1f', '#0f8b8d', '#c2185b', '#5d6d7e']

// The close codes after which reconnecting cannot help (relay's README, "Handshake refusals").
const CLOSE_REASONS = {
  4400: 'The room code is not valid.',
  4401: 'Your session expired: sign in again.',
  4403: 'You are not a member of this room (or you were removed from it).',
  4404: 'This room does not exist (or it expired).',
  4410: 'The interviewer closed this room.',
  4429: 'Too many connections to this room: close another tab and reload.'
}

const SESSION_KEY = 'relay.session'
const MEMBER_REFRESH_MS = 10000

const $ = (id) => document.getElementById(id)

// ---------------------------------------------------------------------------------------------
// Session (per tab: two tabs can be two different people) and the HTTP API

function loadSession () {
  try {
    const session = JSON.parse(sessionStorage.getItem(SESSION_KEY) || 'null')
    if (session && session.token && session.expires_at * 1000 > Date.now() + 60000) return session
  } catch (_) { /* a damaged entry is the same as none */ }
  return null
}

function saveSession (session) {
  if (session) sessionStorage.setItem(SESSION_KEY, JSON.stringify(session))
  else sessionStorage.removeItem(SESSION_KEY)
}

class ApiError extends Error {
  constructor (status, code, message) {
    super(message)
    this.status = status
    this.code = code
  }
}

async function api (method, path, { token, body } = {}) {
  const headers = {}
  if (token) headers.Authorization = `Bearer ${token}`
  if (body !== undefined) headers['Content-Type'] = 'application/json'
  let response
  try {
    response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) })
  } catch (error) {
    throw new ApiError(0, 'network', `relay is unreachable (${error.message}); try again`)
  }
  let data = null
  try {
    data = await response.json()
  } catch (_) { /* no JSON body */ }
  if (!response.ok) {
    const message = (data && data.message) || `HTTP ${response.status}: ${response.statusText}`
    throw new ApiError(response.status, (data && data.code) || 'http_error', message)
  }
  return data
}

async function signIn (name, role, userId) {
  const body = { name, role }
  if (userId) body.user_id = userId
  const minted = await api('POST', '/api/dev/token', { body })
  const session = { ...minted, requested_role: role }
  saveSession(session)
  return session
}

// Outside development mode the page signs in with an access token the user pastes (from the app's
// Supabase session). relay verifies it on every call; the page only reads who it names, for display.
function sessionFromToken (token) {
  let claims
  try {
    const payload = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/')
    claims = JSON.parse(decodeURIComponent(escape(atob(payload))))
  } catch (_) {
    throw new Error('That is not an access token (a JWT has three dot-separated parts).')
  }
  const metadata = claims.user_metadata || {}
  const session = {
    token,
    user_id: String(claims.sub || ''),
    user_name: metadata.full_name || metadata.name || claims.email || String(claims.sub || ''),
    role: null,
    expires_at: Number(claims.exp || 0)
  }
  if (!session.user_id) throw new Error('That token names no user (no "sub" claim).')
  if (session.expires_at * 1000 <= Date.now()) throw new Error('That token has expired.')
  saveSession(session)
  return session
}

// ---------------------------------------------------------------------------------------------
// Small view helpers

let noticeTimer = null
function notice (message, kind = 'info', sticky = false) {
  const box = $('notice')
  box.textContent = message
  box.dataset.kind = kind
  box.hidden = false
  clearTimeout(noticeTimer)
  if (!sticky) noticeTimer = setTimeout(() => { box.hidden = true }, 6000)
}

function clearNotice () {
  clearTimeout(noticeTimer)
  $('notice').hidden = true
}

function show (sectionId) {
  for (const id of ['signin', 'lobby', 'room']) $(id).hidden = id !== sectionId
}

function fillLanguages (select, selected) {
  select.replaceChildren(...Object.entries(LANGUAGES).map(([value, { label }]) => {
    const option = document.createElement('option')
    option.value = value
    option.textContent = label
    option.selected = value === selected
    return option
  }))
}

function colourFor (userId) {
  let hash = 0
  for (const char of userId) hash = (hash * 31 + char.codePointAt(0)) >>> 0
  return COLOURS[hash % COLOURS.length]
}

function roomFromHash () {
  const match = /^#\/room\/([A-Za-z0-9]{6})$/.exec(location.hash)
  return match ? match[1].toUpperCase() : null
}

// ---------------------------------------------------------------------------------------------
// The room: provider, editor, members, connection indicator

class Room {
  constructor (session, code, role, info) {
    this.session = session
    this.code = code
    this.role = role
    this.info = info
    this.members = info.members || []
    this.reconnects = 0
    this.everConnected = false
    this.closed = false
    this.doc = new Y.Doc()
    this.text = this.doc.getText(TEXT_NAME)
    this.meta = this.doc.getMap(META_NAME)
    const scheme = location.protocol === 'https:' ? 'wss' : 'ws'
    this.provider = new WebsocketProvider(`${scheme}://${location.host}/yjs`, code, this.doc, {
      params: { token: session.token },
      // Every tab is its own person with its own token: the server, not a same-origin
      // BroadcastChannel, is what keeps tabs in step.
      disableBc: true
    })
    this.provider.awareness.setLocalStateField('user', {
      id: session.user_id,
      name: session.user_name,
      role,
      color: colourFor(session.user_id),
      colorLight: colourFor(session.user_id) + '33'
    })
    this.language = new Compartment()
    this.editable = new Compartment()
    this.view = new EditorView({
      parent: $('editor'),
      state: EditorState.create({
        doc: this.text.toString(),
        extensions: [
          keymap.of(yUndoManagerKeymap),
          basicSetup,
          this.language.of(this.languageExtension(this.currentLanguage())),
          this.editable.of(EditorView.editable.of(true)),
          EditorView.theme({
            // Names over remote cursors always visible, not only on hover.
            '.cm-ySelectionInfo': { opacity: '1', top: '-1.15em', fontSize: '11px', padding: '1px 3px', borderRadius: '3px 3px 3px 0' }
          }),
          yCollab(this.text, this.provider.awareness, { undoManager: new Y.UndoManager(this.text) })
        ]
      })
    })
    this.bind()
    this.renderHeader()
    this.renderMembers()
    this.memberTimer = setInterval(() => this.refreshMembers(), MEMBER_REFRESH_MS)
  }

  currentLanguage () {
    const shared = this.meta.get('language')
    if (shared && LANGUAGES[shared]) return shared
    return LANGUAGES[this.info.language] ? this.info.language : DEFAULT_LANGUAGE
  }

  languageExtension (name) {
    const language = LANGUAGES[name] || LANGUAGES[DEFAULT_LANGUAGE]
    return [language.extension(), indentUnit.of(language.indent)]
  }

  bind () {
    const provider = this.provider
    provider.on('status', ({ status }) => {
      if (status === 'connected') {
        if (this.everConnected) this.reconnects += 1
        this.everConnected = true
        this.refreshMembers()
      }
      this.renderConnection(status)
    })
    provider.on('sync', () => this.renderConnection())
    provider.on('connection-close', () => this.renderConnection())
    provider.on('closed', ({ code, reason }) => this.onRefused(code, reason))
    provider.awareness.on('change', ({ added, removed }) => {
      if (added.length || removed.length) this.scheduleMemberRefresh()
      this.renderMembers()
    })
    this.meta.observe(() => {
      const name = this.currentLanguage()
      $('room-language').value = name
      this.view.dispatch({ effects: this.language.reconfigure(this.languageExtension(name)) })
    })
    $('room-language').onchange = (event) => this.meta.set('language', event.target.value)
    $('close-room').onclick = () => this.closeRoom()
    $('leave-room').onclick = () => { location.hash = '' }
  }

  async onRefused (code, reason) {
    if (code === 4401 && this.session.requested_role) {
      // Development tokens are minted by the page: mint a fresh one and carry on.
      try {
        this.session = await signIn(this.session.user_name, this.session.requested_role, this.session.user_id)
        this.provider.params.token = this.session.token
        this.provider.connect()
        return
      } catch (_) { /* fall through to the message */ }
    }
    this.closed = true
    this.view.dispatch({ effects: this.editable.reconfigure(EditorView.editable.of(false)) })
    this.renderConnection('closed')
    notice(CLOSE_REASONS[code] || `Disconnected by relay (${code}${reason ? ': ' + reason : ''}).`, 'error', true)
    $('close-room').hidden = true
    clearInterval(this.memberTimer)
    this.renderMembers()
  }

  scheduleMemberRefresh () {
    clearTimeout(this.memberRefreshTimer)
    this.memberRefreshTimer = setTimeout(() => this.refreshMembers(), 400)
  }

  async refreshMembers () {
    if (this.closed) return
    try {
      const info = await api('GET', `/api/room/${this.code}`, { token: this.session.token })
      this.members = info.members || []
      this.renderMembers()
    } catch (_) { /* the connection indicator already tells the story; try again on the next tick */ }
  }

  async closeRoom () {
    if (!confirm(`Close room ${this.code} for everyone?`)) return
    try {
      await api('DELETE', `/api/room/${this.code}`, { token: this.session.token })
    } catch (error) {
      notice(`Could not close the room: ${error.message}`, 'error')
    }
  }

  renderHeader () {
    $('room-code').textContent = this.code
    $('room-title').textContent = this.info.title || ''
    fillLanguages($('room-language'), this.currentLanguage())
    $('close-room').hidden = this.role !== 'interviewer'
  }

  renderConnection (status) {
    const box = $('connection')
    if (!status) status = box.dataset.status
    if (status === 'connecting' && this.everConnected) status = 'reconnecting'
    if (status === 'disconnected' && this.closed) status = 'closed'
    const synced = this.provider.synced && status === 'connected'
    box.dataset.status = status
    box.dataset.synced = String(synced)
    box.dataset.reconnects = String(this.reconnects)
    const labels = {
      connecting: 'connecting…',
      connected: synced ? 'connected' : 'connected, syncing…',
      reconnecting: 'reconnecting…',
      disconnected: 'disconnected, retrying…',
      closed: 'disconnected'
    }
    const failed = this.provider.wsUnsuccessfulReconnects
    const attempt = status !== 'connected' && status !== 'closed' && failed ? ` (attempt ${failed + 1})` : ''
    const again = this.reconnects ? ` · reconnected ${this.reconnects}×` : ''
    box.textContent = (labels[status] || status) + attempt + again
  }

  renderMembers () {
    // Live presence from awareness (this replica's view of the room, instant) joined with relay's
    // member records (names and roles as relay knows them, "connected" across every replica).
    const online = new Map()
    for (const state of this.provider.awareness.getStates().values()) {
      if (state.user && state.user.id) online.set(state.user.id, state.user)
    }
    const seen = new Set()
    const rows = []
    for (const member of this.members) {
      seen.add(member.user_id)
      rows.push({
        id: member.user_id,
        name: member.user_name,
        role: member.role,
        connected: !this.closed && (member.connected || online.has(member.user_id))
      })
    }
    for (const [id, user] of online) {
      if (!seen.has(id)) rows.push({ id, name: user.name, role: user.role, connected: !this.closed })
    }
    $('member-list').replaceChildren(...rows.map((row) => {
      const item = document.createElement('li')
      item.dataset.userId = row.id
      item.dataset.connected = String(Boolean(row.connected))
      item.style.setProperty('--member-color', colourFor(row.id))
      const dot = document.createElement('span')
      dot.className = 'dot'
      dot.title = row.connected ? 'connected' : 'not connected'
      const name = document.createElement('span')
      name.className = 'name'
      name.textContent = row.name + (row.id === this.session.user_id ? ' (you)' : '')
      const role = document.createElement('span')
      role.className = 'role'
      role.textContent = row.role || ''
      item.append(dot, name, role)
      return item
    }))
  }

  destroy () {
    clearInterval(this.memberTimer)
    clearTimeout(this.memberRefreshTimer)
    this.provider.destroy()
    this.view.destroy()
    this.doc.destroy()
  }
}

// ---------------------------------------------------------------------------------------------
// Navigation: sign-in → lobby → room (#/room/CODE, so a reload or a shared link lands in the room)

let room = null

async function enterRoom (session, code) {
  let joined, info
  try {
    // Joining again is harmless (relay answers "Already a member" with the first role).
    joined = await api('POST', '/api/join-room', { token: session.token, body: { room_code: code } })
    info = await api('GET', `/api/room/${code}`, { token: session.token })
  } catch (error) {
    if (error.status === 401) {
      saveSession(null)
      return route()
    }
    notice(error.message, 'error')
    location.hash = ''
    return
  }
  clearNotice()
  show('room')
  room = new Room(session, code, joined.role, info)
  window.relayRoom = room // handy in the browser console: relayRoom.text.toString()
}

function leaveRoom () {
  if (room) {
    room.destroy()
    room = null
    window.relayRoom = undefined
  }
}

async function route () {
  const session = loadSession()
  $('whoami').hidden = $('signout').hidden = !session
  if (!session) {
    leaveRoom()
    show('signin')
    return
  }
  const role = session.requested_role || session.role
  $('whoami').textContent = role ? `${session.user_name} · ${role}` : session.user_name
  const code = roomFromHash()
  if (code && room && room.code === code) return
  leaveRoom()
  if (code) return enterRoom(session, code)
  show('lobby')
  fillLanguages($('create-language'), DEFAULT_LANGUAGE)
  // Candidates join; creating is offered to interviewers (and to pasted tokens, whose role relay decides).
  $('create-form').hidden = role === 'candidate'
}

function setUp () {
  $('signin-form').onsubmit = async (event) => {
    event.preventDefault()
    const form = new FormData(event.target)
    try {
      await signIn(String(form.get('name')).trim(), String(form.get('role')))
      clearNotice()
      route()
    } catch (error) {
      notice(error.message, 'error')
    }
  }
  const devSignIn = document.body.dataset.devSignin === 'true'
  $('signin-form').hidden = $('signin-dev-hint').hidden = !devSignIn
  $('token-form').hidden = $('signin-token-hint').hidden = devSignIn
  $('token-form').onsubmit = (event) => {
    event.preventDefault()
    try {
      sessionFromToken($('token-value').value.trim())
      clearNotice()
      route()
    } catch (error) {
      notice(error.message, 'error')
    }
  }
  $('signout').onclick = () => {
    saveSession(null)
    location.hash = ''
    route()
  }
  $('create-form').onsubmit = async (event) => {
    event.preventDefault()
    const session = loadSession()
    if (!session) return route()
    try {
      const created = await api('POST', '/api/create-room', {
        token: session.token,
        body: { language: $('create-language').value, title: $('create-title').value.trim() }
      })
      location.hash = `#/room/${created.room_code}`
    } catch (error) {
      notice(error.message, 'error')
    }
  }
  $('join-form').onsubmit = (event) => {
    event.preventDefault()
    const code = $('join-code').value.trim().toUpperCase()
    if (!/^[A-Z0-9]{6}$/.test(code)) {
      notice('A room code is 6 letters and digits, e.g. K7QF2M', 'error')
      return
    }
    location.hash = `#/room/${code}`
  }
  window.addEventListener('hashchange', route)
  route()
}

setUp()
