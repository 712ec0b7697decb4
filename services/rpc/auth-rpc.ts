import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import type { ConnectRouter } from "@connectrpc/connect";
import { AuthService, type Tokens, TokensSchema } from "../../gen/chat/v1/auth_service_pb.js";
import type { AuthService as AuthUseCases, Session } from "../auth/auth-service.js";
import { userToProto } from "../delivery/proto-convert.js";
import { kClientAddress, principalOf } from "./interceptors.js";

/** authRoutes serves chat.v1.AuthService: proto in, use-case, proto out. */
export function authRoutes(router: ConnectRouter, auth: AuthUseCases): ConnectRouter {
  return router.service(AuthService, {
    async register(req, ctx) {
      const { user, session } = await auth.register(req.username, req.password, ctx.values.get(kClientAddress));
      return { user: userToProto(user), tokens: tokensToProto(session) };
    },
    async login(req, ctx) {
      const { user, session } = await auth.login(req.username, req.password, ctx.values.get(kClientAddress));
      return { user: userToProto(user), tokens: tokensToProto(session) };
    },
    async refreshToken(req) {
      return { tokens: tokensToProto(await auth.refresh(req.refreshToken)) };
    },
    async logout(req, ctx) {
      await auth.logout(principalOf(ctx.values), req.refreshToken);
      return {};
    },
  });
}

function tokensToProto(s: Session): Tokens {
  return create(TokensSchema, {
    accessToken: s.accessToken,
    accessTokenExpiresAt: timestampFromMs(s.accessTokenExpiresAt),
    refreshToken: s.refreshToken,
    refreshTokenExpiresAt: timestampFromMs(s.refreshTokenExpiresAt),
  });
}
