/**
 * The test host page (bundled by test/helpers/browser.ts): loads a view's HTML in a sandboxed frame
 * (scripts, no same origin, as hosts do) and speaks to it with the extension's own host bridge. Tool
 * calls from the view go to the test's MCP client (window.hostCallTool, exposed by Playwright).
 */
import { AppBridge, PostMessageTransport } from '@modelcontextprotocol/ext-apps/app-bridge';

declare global {
  interface Window {
    hostCallTool(params: { name: string; arguments?: Record<string, unknown> }): Promise<any>;
    loadView(html: string, input: Record<string, unknown>, result: any): Promise<void>;
  }
}

window.loadView = async (html, input, result) => {
  const frame = document.createElement('iframe');
  frame.setAttribute('sandbox', 'allow-scripts');
  frame.style.cssText = 'width:100%;height:600px;border:0;display:block';
  document.body.append(frame);
  const bridge = new AppBridge(null, { name: 'test-host', version: '1.0.0' }, { serverTools: {} });
  // The view asks for its height (autoResize), as a host would size the frame.
  bridge.onsizechange = ({ height }) => {
    if (height) frame.style.height = `${height}px`;
  };
  bridge.oncalltool = (params) => window.hostCallTool({ name: params.name, arguments: params.arguments });
  bridge.oninitialized = () => {
    void bridge.sendToolInput({ arguments: input }).then(() => bridge.sendToolResult(result));
  };
  await bridge.connect(new PostMessageTransport(frame.contentWindow!, frame.contentWindow!));
  frame.srcdoc = html;
};
