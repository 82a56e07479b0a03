import { useState } from "preact/hooks";
import type { RunEvent } from "../client/index.ts";

type Paused = Extract<RunEvent, { event: "WorkflowPaused" }>;
type Requirement = Paused["step_requirements"][number];

/** A value typed into a field, as the field's type wants it. */
function fieldValue(type: string, text: string, checked: boolean): unknown {
  switch (type) {
    case "bool":
      return checked;
    case "int":
    case "float":
      return text.trim() === "" ? null : Number(text);
    case "list":
    case "dict":
      try {
        return JSON.parse(text) as unknown;
      } catch {
        return text;
      }
    default:
      return text;
  }
}

/** The form for a paused run's open requirement (the last of `step_requirements`), built from what it asks. */
export function ContinueForm({ pause, onAnswer }: { pause: Paused; onAnswer: (requirements: unknown[]) => Promise<void> }) {
  const open: Requirement | undefined = pause.step_requirements.at(-1);
  const [busy, setBusy] = useState(false);
  const [texts, setTexts] = useState<Record<string, string>>({});
  const [checks, setChecks] = useState<Record<string, boolean>>({});
  if (!open) return null;
  const send = async (answer: Record<string, unknown>): Promise<void> => {
    setBusy(true);
    try {
      await onAnswer([{ ...answer, step_id: open.step_id }]);
    } finally {
      setBusy(false);
    }
  };
  const buttons = (yes: string, no: string, answer: (ok: boolean) => Record<string, unknown>) => (
    <div class="actions">
      <button disabled={busy} data-answer="yes" onClick={() => void send(answer(true))}>
        {yes}
      </button>
      <button disabled={busy} data-answer="no" class="secondary" onClick={() => void send(answer(false))}>
        {no}
      </button>
    </div>
  );

  let body;
  if (open.requires_executor_input && open.executor_requirements) {
    const requirements = open.executor_requirements;
    body = (
      <>
        {requirements.map((requirement) => (
          <p key={requirement.id}>
            Tool <code>{requirement.tool_execution.tool_name}</code> wants to run with <code>{JSON.stringify(requirement.tool_execution.tool_args)}</code>
          </p>
        ))}
        {buttons("Approve", "Reject", (ok) => ({
          executor_requirements: requirements.map((requirement) => ({ ...requirement, confirmation: ok, tool_execution: { ...requirement.tool_execution, confirmed: ok } })),
        }))}
      </>
    );
  } else if (open.requires_error_decision) {
    body = (
      <>
        <p class="error-text">{open.error_message}</p>
        {buttons("Retry", "Skip", (ok) => ({ decision: ok ? "retry" : "skip" }))}
      </>
    );
  } else if (open.requires_route_selection) {
    const choices = open.available_choices ?? [];
    body = (
      <form
        onSubmit={(e) => {
          e.preventDefault();
          void send({ selected_choices: choices.filter((choice) => checks[choice]) });
        }}
      >
        <p>{open.user_input_message ?? "Choose where the run goes on."}</p>
        {choices.map((choice) => (
          <label key={choice} class="choice">
            <input
              type={open.allow_multiple_selections ? "checkbox" : "radio"}
              name="route"
              checked={checks[choice] ?? false}
              onChange={(e) => setChecks(open.allow_multiple_selections ? { ...checks, [choice]: e.currentTarget.checked } : { [choice]: e.currentTarget.checked })}
            />
            {choice}
          </label>
        ))}
        <div class="actions">
          <button disabled={busy} type="submit">
            Continue
          </button>
        </div>
      </form>
    );
  } else if (open.requires_user_input) {
    const fields = open.user_input_schema ?? [];
    body = (
      <form
        onSubmit={(e) => {
          e.preventDefault();
          void send({ user_input: Object.fromEntries(fields.map((field) => [field.name, fieldValue(field.field_type, texts[field.name] ?? "", checks[field.name] ?? false)])) });
        }}
      >
        <p>{open.user_input_message ?? "Fill in what the step needs."}</p>
        {fields.map((field) => (
          <label key={field.name} class="field">
            <span>
              {field.name}
              {field.required ? " *" : ""} <small>{field.description ?? field.field_type}</small>
            </span>
            {field.field_type === "bool" ? (
              <input type="checkbox" name={field.name} checked={checks[field.name] ?? false} onChange={(e) => setChecks({ ...checks, [field.name]: e.currentTarget.checked })} />
            ) : field.allowed_values ? (
              <select name={field.name} value={texts[field.name] ?? ""} onChange={(e) => setTexts({ ...texts, [field.name]: e.currentTarget.value })}>
                <option value="">—</option>
                {field.allowed_values.map((value) => (
                  <option key={String(value)} value={String(value)}>
                    {String(value)}
                  </option>
                ))}
              </select>
            ) : (
              <input
                name={field.name}
                inputMode={field.field_type === "int" ? "numeric" : field.field_type === "float" ? "decimal" : "text"}
                required={field.required}
                value={texts[field.name] ?? ""}
                onInput={(e) => setTexts({ ...texts, [field.name]: e.currentTarget.value })}
              />
            )}
          </label>
        ))}
        <div class="actions">
          <button disabled={busy} type="submit">
            Continue
          </button>
        </div>
      </form>
    );
  } else {
    body = (
      <>
        <p>{open.confirmation_message ?? "Go on with this step?"}</p>
        {buttons("Approve", "Reject", (ok) => ({ confirmed: ok }))}
      </>
    );
  }
  return (
    <section class="panel continue-form" data-step={open.step_id}>
      <h3>
        Paused at <code>{open.step_name}</code>
      </h3>
      {body}
    </section>
  );
}
