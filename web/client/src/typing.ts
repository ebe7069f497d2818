// Typing: the typing indicator of one room for one client.
//
// keystroke() sends `typing:start` once, then again every `renewMs` (4 s)
// while keystrokes keep coming, so the server's 6 s expiry never ends an
// indicator that is still live; stop() sends `typing:stop`. Posting a
// message (ParleyAPI.messages.send with { client }) ends it: the server
// sends the `typing:stop` itself, so nothing is sent from here.

import type { ParleyClient } from './client.js';

/** How often a live indicator is renewed (the server lets one lapse after 6 s). */
export const TYPING_RENEW_MS = 4000;
/** After this long without a keystroke the server has ended the indicator. */
export const TYPING_EXPIRY_MS = 6000;

export class Typing {
  readonly roomId: string;
  readonly #client: ParleyClient;
  #active = false;
  #lastStart = 0;
  #expiry: ReturnType<typeof setTimeout> | undefined;

  /** @internal made by ParleyClient.typing(roomId). */
  constructor(client: ParleyClient, roomId: string) {
    this.#client = client;
    this.roomId = roomId;
  }

  /** Whether the server currently shows me typing in this room (as far as this client knows). */
  get active(): boolean {
    return this.#active;
  }

  /** keystroke: call on every keystroke (or input event). */
  keystroke(): void {
    if (this.#client.state !== 'connected') return;
    const now = Date.now();
    if (!this.#active || now - this.#lastStart >= TYPING_RENEW_MS) {
      this.#lastStart = now;
      this.#send('typing:start');
    }
    this.#active = true;
    if (this.#expiry !== undefined) clearTimeout(this.#expiry);
    this.#expiry = setTimeout(() => {
      this.#expiry = undefined;
      this.#active = false;
    }, TYPING_EXPIRY_MS);
  }

  /** stop ends the indicator now (a typing:stop to the others). */
  stop(): void {
    if (!this.#active) return;
    this._reset();
    this.#send('typing:stop');
  }

  /** @internal a message was posted with this client: the server ended the indicator. */
  _messageSent(): void {
    this._reset();
  }

  /** @internal the connection closed: the server ended the indicator. */
  _reset(): void {
    this.#active = false;
    if (this.#expiry !== undefined) clearTimeout(this.#expiry);
    this.#expiry = undefined;
  }

  #send(type: 'typing:start' | 'typing:stop'): void {
    this.#client.request(type, { room_id: this.roomId }).catch((err: { code?: string }) => {
      if (type === 'typing:start') this._reset();
      if (err?.code !== 'disconnected') this.#client._error(err);
    });
  }
}
