import { defineConfig } from "drizzle-kit";

// PostgreSQL's schema and migrations (`npx drizzle-kit generate --config drizzle.pg.config.ts`); SQLite's are in drizzle.config.ts.
export default defineConfig({
  dialect: "postgresql",
  schema: "./src/store/pg/schema.ts",
  out: "./migrations/postgres",
});
