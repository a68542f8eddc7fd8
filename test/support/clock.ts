/** The process's clock set back by `ms` (NTP stepping a clock that ran ahead, or a test living in a fixture's day), for what runs inside `during`. */
export async function clockSetBack<T>(ms: number, during: () => Promise<T>): Promise<T> {
  const restore = setClockBack(ms);
  try {
    return await during();
  } finally {
    restore();
  }
}

/** Sets the process's clock back by `ms` until the returned function is called. */
export function setClockBack(ms: number): () => void {
  const RealDate = Date;
  class SetBack extends RealDate {
    constructor(...args: unknown[]) {
      if (args.length === 0) super(RealDate.now() - ms);
      else super(...(args as [string]));
    }
    static override now(): number {
      return RealDate.now() - ms;
    }
  }
  globalThis.Date = SetBack as DateConstructor;
  return () => {
    globalThis.Date = RealDate;
  };
}
