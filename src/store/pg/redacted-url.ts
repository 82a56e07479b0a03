/** A PostgreSQL URL as logs and messages show it: without its password. */
export function redactedUrl(url: string): string {
  return url.replace(/\/\/([^:@/]*):[^@/]*@/, "//$1:…@");
}
