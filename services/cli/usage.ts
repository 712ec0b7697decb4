/** USAGE is the help text printed by `chat help` and after a usage error. */
export const USAGE = `chat: command-line client for the chat.v1 group-messaging API

Usage: chat [global options] <command> [arguments]

Account
  register <username>                   create an account and log in
  login <username>                      log in (the password comes from --password,
                                        CHAT_PASSWORD, or a prompt on a terminal)
  logout                                end the session on the server and forget it
  whoami                                show the logged-in user

Groups (a group is named by its id or its exact name)
  groups                                list your groups with their unread counts
  create-group <name> [--member <username>]...
                                        create a group, optionally with members
  add-member <group> <username> [--role member|admin|owner]
  remove-member <group> <username|user-id>
  leave <group>                         remove yourself from a group
  members <group>                       list a group's members

Messages
  send <group> <text...>                send a message; prints its seq
  history <group> [--limit N] [--before SEQ | --after SEQ]
                                        list messages (newest page by default)
  read <group>                          mark the group read up to its newest event
                                        (your other devices see it at once)
  tail [<group>...] [--new]             print events live as they arrive (all groups
                                        by default) until Ctrl-C; resumes where the
                                        last tail stopped unless --new is given

  help                                  show this text

Global options
  --server URL     server address (env CHAT_SERVER, default http://127.0.0.1:8080)
  --session FILE   session file (env CHAT_SESSION, default
                   $XDG_CONFIG_HOME/chat-cli/session.json or ~/.config/chat-cli/session.json)
  --json           machine-readable output (proto JSON; one object per line for tail)
  --password PW    password for register/login (prefer CHAT_PASSWORD or the prompt:
                   command lines are visible to other local users)

Exit status: 0 on success, 1 on an error (printed as "error: <code>: <message>"),
2 on a usage error.
`;
