// A small typed event emitter. A handler that throws does not stop the
// others; its error is reported to the `onHandlerError` hook (console.error
// by default), never to the code that emitted the event.

export type Handler<T> = (payload: T) => void;

export class Emitter<Events extends object> {
  #handlers = new Map<keyof Events, Set<Handler<never>>>();

  /** on subscribes fn to event and returns a function that unsubscribes it. */
  on<K extends keyof Events>(event: K, fn: Handler<Events[K]>): () => void {
    let set = this.#handlers.get(event);
    if (!set) {
      set = new Set();
      this.#handlers.set(event, set);
    }
    set.add(fn as Handler<never>);
    return () => this.off(event, fn);
  }

  /** once subscribes fn for one emission. */
  once<K extends keyof Events>(event: K, fn: Handler<Events[K]>): () => void {
    const off = this.on(event, (payload) => {
      off();
      fn(payload);
    });
    return off;
  }

  off<K extends keyof Events>(event: K, fn: Handler<Events[K]>): void {
    this.#handlers.get(event)?.delete(fn as Handler<never>);
  }

  /** listenerCount reports how many handlers event has. */
  listenerCount<K extends keyof Events>(event: K): number {
    return this.#handlers.get(event)?.size ?? 0;
  }

  protected emit<K extends keyof Events>(event: K, payload: Events[K]): void {
    const set = this.#handlers.get(event);
    if (!set || set.size === 0) return;
    for (const fn of [...set]) {
      try {
        (fn as Handler<Events[K]>)(payload);
      } catch (err) {
        this.onHandlerError(err, String(event));
      }
    }
  }

  protected onHandlerError(err: unknown, event: string): void {
    console.error(`parley: a '${event}' handler threw`, err);
  }
}
